"""
A Twisted SocketCluster client, on autobahn's WebSocket client::

    from scserver.client import connect

    socket = yield connect("ws://127.0.0.1:8000/socketcluster/", reactor=reactor)
    reply = yield socket.invoke("echo", {"hello": "world"})
    channel = socket.subscribe("news")
    channel.watch(print)
    yield channel.when_subscribed()
    yield socket.publish("news", "hi")
    yield socket.disconnect()

L{connect} dials, waits for the SocketCluster handshake and fires with the
L{SCClientSocket}.  To attach event handlers before the handshake (a v14
server sends events from its C{connection} handler I{before} the handshake
reply), make the socket first and connect it yourself::

    socket = SCClientSocket(url, reactor=reactor)
    socket.on("welcome", on_welcome)
    yield socket.connect()

It speaks both heartbeat dialects: C{protocol_version=2} (socketcluster 15+,
the default) answers the server's empty ping with an empty pong and carries a
disconnect reason in the close frame; C{protocol_version=1} (socketcluster
14 and older) answers C{#1} with C{#2} (through the codec) and sends a
C{#disconnect} event before it closes.

Automatic reconnection (C{auto_reconnect=True}, the default) follows
socketcluster-client:
codes 4000, 4001 and 1005 reconnect at once, 1000 and 4500+ never, others
after an exponential backoff; channels are subscribed again and events
emitted meanwhile are sent once the new handshake completes.  A
L{SCClientSocket.disconnect} never reconnects.

Times are seconds.  The reactor is passed in (C{None} means the global one).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, TypeVar, Union

from autobahn.websocket.util import parse_url
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._logging import observer as log_observer
from . import _engine
from ._events import CallId, EventEmitter, Responder, call_handlers
from ._transport import SCClientFactory
from .errors import (
    BadConnectionError,
    InvalidActionError,
    InvalidArgumentsError,
    InvalidMessageError,
    SocketProtocolError,
    TimeoutError,
    as_exception,
    hydrate_error,
    socket_protocol_error,
)
from .interfaces import ICodecEngine

if TYPE_CHECKING:
    from ._transport import SCClientProtocol

__all__ = ["connect", "SCClientSocket", "SCClientChannel", "decode_auth_token"]

_log = Logger(observer=log_observer)

_RECONNECT_DEFAULTS = {
    "initial_delay": 10.0,
    "randomness": 10.0,
    "multiplier": 1.5,
    "max_delay": 60.0,
}

_LOCAL_EVENTS = frozenset([
    "connect", "connectAbort", "disconnect", "close", "error", "raw",
    "message", "authenticate", "deauthenticate", "authStateChange",
    "removeAuthToken", "kickOut", "subscribe", "subscribeFail",
    "unsubscribe", "subscribeRequest", "subscribeStateChange", "connecting",
])


def connect(url: str, reactor: Any = None, **options: Any) -> Deferred["SCClientSocket"]:
    """
    Connect to a SocketCluster server.

    @param url: C{ws://host[:port]/path[?query]} or C{wss://...}; the path
        of a SocketCluster server is usually C{/socketcluster/}.
    @param reactor: the reactor (C{None}: the global one).
    @param options: the keyword options of L{SCClientSocket}.
    @return: a Deferred firing with the connected L{SCClientSocket} once the
        SocketCluster handshake completed.  It fails with the server's
        handshake error (hydrated, e.g. an L{scserver.errors.RemoteError}
        named as the server's error) or a
        L{scserver.errors.BadConnectionError} when the connection closed
        first.  With C{auto_reconnect} it waits through reconnection
        attempts; cancel it to give up.
    """
    return SCClientSocket(url, reactor=reactor, **options).connect()


def decode_auth_token(signed_token: object) -> Any:
    """
    Return the payload of a signed JWT, without verifying it.

    The middle, base64url-encoded part is decoded as JSON, as
    socketcluster-client does to fill C{authToken}.

    @param signed_token: the signed token (C{str}), or C{None}.
    @return: the payload (usually a C{dict}), or C{None} when C{signed_token}
        is not a decodable JWT.
    """
    if not isinstance(signed_token, str):
        return None
    parts = signed_token.split(".")
    if len(parts) < 2:
        return None
    encoded = parts[1]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        return json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


_default_codec: Optional[ICodecEngine] = None


def _get_default_codec() -> ICodecEngine:
    global _default_codec
    if _default_codec is None:
        from .codec import JSONCodec

        _default_codec = JSONCodec()
    return _default_codec


def _call_safely(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        _log.failure("Error in {what}", what=what)


class _Buffered:
    """An event emitted while the socket was not open, sent after the next handshake."""

    __slots__ = ("event", "data", "callback", "cid", "deadline", "timer")

    def __init__(self, event: str, data: Any, callback: Optional[Callable[[Any, Any], object]],
                 cid: Optional[int], deadline: Optional[float],
                 timer: Optional[IDelayedCall]) -> None:
        self.event = event
        self.data = data
        self.callback = callback
        self.cid = cid
        self.deadline = deadline
        self.timer = timer


_WatcherT = TypeVar("_WatcherT", bound=Callable[[Any], object])


class SCClientChannel:
    """
    A channel a L{SCClientSocket} subscribes to.

    Get one from L{SCClientSocket.subscribe}.  Watchers survive reconnects
    and unsubscribing.

    @ivar name: the channel name.
    @ivar state: L{PENDING}, L{SUBSCRIBED} or L{UNSUBSCRIBED}.
    @ivar wait_for_auth: subscribe only while the socket is authenticated.
    @ivar data: the custom data sent with the subscription, or C{None}.
    @ivar recover: whether the subscription opted in to recovery (see the
        I{History and recovery} page of the documentation): each
        subscription, the first and every one after a reconnect, asks the
        server for what was missed since L{offset} of L{epoch}.
    @ivar offset: with L{recover}, the offset of the last publication
        received (or of the history when subscribed), else C{None}.
    @ivar epoch: with L{recover}, the epoch of L{offset}, else C{None}.
    @ivar recovered: with L{recover}, set by every subscribe reply before
        the C{'subscribe'} event: C{True} when the publications missed
        since L{offset} are being replayed, C{False} when they could not be
        (the first subscription, or the history lost or trimmed: the
        application must resynchronise), C{None} before the first reply.
    """

    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"

    __slots__ = ("name", "state", "wait_for_auth", "data", "_socket",
                 "_watchers", "_waiters", "_request_cid", "recover", "offset", "epoch",
                 "recovered")

    def __init__(self, socket: "SCClientSocket", name: str, wait_for_auth: bool = False,
                 data: Any = None, recover: bool = False) -> None:
        self._socket = socket
        self.name = name
        self.state = self.UNSUBSCRIBED
        self.wait_for_auth = wait_for_auth
        self.data = data
        self.recover = recover
        self.offset: Optional[int] = None
        self.epoch: Optional[str] = None
        self.recovered: Optional[bool] = None
        self._watchers: list[Callable[[Any], object]] = []
        self._waiters: Optional[list[Deferred[SCClientChannel]]] = None
        self._request_cid: Optional[int] = None

    def __repr__(self) -> str:
        return "<SCClientChannel {!r} {}>".format(self.name, self.state)

    def watch(self, handler: _WatcherT) -> _WatcherT:
        """
        Call C{handler(data)} for every publication on this channel.

        @return: C{handler}.
        """
        self._watchers.append(handler)
        return handler

    def unwatch(self, handler: Optional[Callable[[Any], object]] = None) -> None:
        """Stop calling C{handler}, or every watcher when it is omitted."""
        if handler is None:
            del self._watchers[:]
        else:
            try:
                self._watchers.remove(handler)
            except ValueError:
                pass

    def watchers(self) -> list[Callable[[Any], object]]:
        """Return a list of the watchers."""
        return list(self._watchers)

    def unsubscribe(self) -> None:
        """Unsubscribe the socket from this channel."""
        self._socket.unsubscribe(self.name)

    def when_subscribed(self) -> Deferred["SCClientChannel"]:
        """
        Return a Deferred firing with this channel once the server
        acknowledged the subscription (at once when it already is).

        It fails with the server's error (C{subscribeFail}), with a
        L{scserver.errors.BadConnectionError} when the socket closed for good
        first, or an L{scserver.errors.InvalidActionError} when the channel
        was unsubscribed or kicked out first.
        """
        if self.state == self.SUBSCRIBED:
            return defer.succeed(self)
        d: Deferred[SCClientChannel] = defer.Deferred()
        if self.state == self.UNSUBSCRIBED:
            d.errback(InvalidActionError(
                "Channel {!r} is not subscribed".format(self.name)))
            return d
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(d)
        return d

    def _deliver(self, data: Any) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(data)
            except Exception:
                _log.failure("Error in a watcher of channel {channel!r}", channel=self.name)

    def _settle(self, error: Any = None) -> None:
        waiters = self._waiters
        if not waiters:
            return
        self._waiters = None
        for d in waiters:
            if error is None:
                d.callback(self)
            else:
                d.errback(as_exception(error))


@implementer(_engine.IEngineOwner)
class SCClientSocket(EventEmitter):
    """
    A SocketCluster client socket.

    Construct it, attach handlers with C{on}, then call L{connect}; or use the
    module's L{connect} function.

    Events (C{on}/C{off}/C{once}) and their handler arguments:
     - C{'connect'} (status: the handshake reply, a dict with C{id},
       C{pingTimeout}, C{isAuthenticated} and perhaps C{authError});
     - C{'connectAbort'} (code, reason): closed before the handshake completed;
     - C{'disconnect'} (code, reason): closed after it;
     - C{'close'} (code, reason): after either of them;
     - C{'error'} (error): a handshake error, a L{SocketProtocolError} for an
       abnormal close code, an undecodable message;
     - C{'raw'} (message): an inbound message that is not a packet;
     - C{'authenticate'} (signed_token), C{'deauthenticate'}
       (old_signed_token), C{'authStateChange'} (dict: oldState, newState,
       and signedAuthToken/authToken when authenticated),
       C{'removeAuthToken'} (old_signed_token);
     - C{'kickOut'} (message, channel);
     - C{'subscribe'} (channel, options), C{'subscribeFail'} (error,
       channel, options), C{'unsubscribe'} (channel);
     - any other name is a server event: C{handler(data, respond)}.
       C{respond(error=None, data=None)} sends the reply when the server asked
       for one (it does nothing otherwise).  A handler that returns a
       Deferred, a coroutine or a value other than C{None}, and has not
       called C{respond}, replies with that result (or failure); an exception
       raised by the handler is the error reply.

    A close reason is the C{data} of a C{#disconnect} event when the server
    sent one, else the close frame's reason, else C{None}.

    @ivar id: the id the server gave this socket (C{None} when not open).
    @ivar state: L{CONNECTING}, L{OPEN} or L{CLOSED}.
    @ivar auth_state: L{AUTHENTICATED} or L{UNAUTHENTICATED}.
    @ivar signed_auth_token: the signed JWT the socket is authenticated with.
    @ivar auth_token: its decoded payload (see L{decode_auth_token}), or
        C{None}.
    @ivar protocol_version: 1 or 2.
    @ivar ping_timeout: seconds without a server ping before the socket
        closes itself with 4000 (the server's C{pingTimeout} once open).
    """

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"
    AUTHENTICATED = "authenticated"
    UNAUTHENTICATED = "unauthenticated"

    _log = Logger(observer=log_observer)

    def __init__(self, url: str, reactor: Any = None, auth_token: Optional[str] = None,
                 protocol_version: int = 2, codec_engine: Optional[ICodecEngine] = None,
                 ack_timeout: float = 10, auto_reconnect: bool = True,
                 reconnect_options: Optional[Mapping[str, float]] = None,
                 headers: Optional[Mapping[str, str]] = None, ssl_context_factory: Any = None,
                 connect_timeout: float = 20, ping_timeout_disabled: bool = False,
                 per_message_deflate: bool = False) -> None:
        """
        @param url: C{ws://} or C{wss://} URL of the server's endpoint.
        @param reactor: the reactor (C{None}: the global one).
        @param auth_token: a signed JWT to present in the handshake.
        @param protocol_version: 2 (heartbeat C{''}/C{''}, socketcluster 15+)
            or 1 (C{#1}/C{#2} and C{#disconnect}, socketcluster 14).
        @param codec_engine: an L{scserver.interfaces.ICodecEngine}; the
            default is L{scserver.codec.JSONCodec}.
        @param ack_timeout: seconds to wait for the reply to an L{invoke},
            an L{emit} with a callback, a L{publish}, an L{authenticate} and
            the handshake.  Subscriptions do not time out.
        @param auto_reconnect: reconnect after an abnormal close (the
            default, as socketcluster-client does; pass C{False} in tests
            and scripts that must not leave a reconnection scheduled).
        @param reconnect_options: a dict overriding C{initial_delay} (10),
            C{randomness} (10), C{multiplier} (1.5) and C{max_delay} (60):
            the delay of attempt I{n} is C{(initial_delay + randomness *
            random()) * multiplier ** n}, at most C{max_delay}.
        @param headers: extra HTTP headers for the upgrade request (a dict).
        @param ssl_context_factory: for C{wss://}: the client TLS options
            (an C{IOpenSSLClientConnectionCreator} such as
            C{twisted.internet.ssl.optionsForClientTLS(hostname,
            trustRoot=...)}, or a context factory).  The default verifies the
            server against the system trust store.  For a self-signed test
            certificate pass C{optionsForClientTLS(u"localhost",
            trustRoot=Certificate.loadPEM(pem))}, or
            C{twisted.internet.ssl.CertificateOptions()} to skip verification.
        @param connect_timeout: seconds for the TCP (and TLS) connection and
            the WebSocket upgrade; the socket then closes with 4007.
        @param ping_timeout_disabled: do not close when the server's pings
            stop.
        @param per_message_deflate: offer the permessage-deflate extension.
        """
        if protocol_version not in (1, 2):
            raise InvalidArgumentsError(
                "protocol_version must be 1 or 2, not {!r}".format(protocol_version))
        is_secure, host, port, _resource, _path, _params = parse_url(url)
        self.url = url
        self._secure = is_secure
        self._host = host
        self._port = port
        self._reactor: Any = reactor
        self._headers = headers
        self._ssl_context_factory = ssl_context_factory
        self._per_message_deflate = per_message_deflate
        self.protocol_version = protocol_version
        self.codec: ICodecEngine = (
            codec_engine if codec_engine is not None else _get_default_codec())
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.auto_reconnect = auto_reconnect
        self.reconnect_options: dict[str, float] = dict(_RECONNECT_DEFAULTS)
        if reconnect_options:
            unknown = set(reconnect_options) - set(_RECONNECT_DEFAULTS)
            if unknown:
                raise InvalidArgumentsError(
                    "Unknown reconnect options: {}".format(", ".join(sorted(unknown))))
            self.reconnect_options.update(reconnect_options)
        self.ping_timeout_disabled = ping_timeout_disabled
        self.ping_timeout: float = ack_timeout if protocol_version == 1 else connect_timeout

        self.id: Optional[str] = None
        self.state = self.CLOSED
        self.auth_state = self.UNAUTHENTICATED
        self.signed_auth_token: Optional[str] = None
        self.auth_token: Any = None
        self.connect_attempts = 0

        self._stored_token = auth_token
        EventEmitter.__init__(self)
        self._channels: dict[str, SCClientChannel] = {}
        self._cid = 0
        self._buffer: list[_Buffered] = []
        self._attempt: Optional[SCClientFactory] = None
        self._protocol: Optional[SCClientProtocol] = None
        self._last_protocol: Optional[SCClientProtocol] = None
        # The engine of the current connection, or None (Any: ProtocolEngine
        # is not typed yet, and the code checks the state before using it).
        self._engine: Any = None
        self._connect_call: Optional[IDelayedCall] = None
        self._reconnect_call: Optional[IDelayedCall] = None
        self._connect_waiters: list[Deferred[SCClientSocket]] = []
        self._handshake_error: Optional[BaseException] = None
        self._closing_by_user = False

    def __repr__(self) -> str:
        return "<SCClientSocket {} id={!r} {}>".format(self.url, self.id, self.state)

    @property
    def reactor(self) -> Any:
        """The reactor this socket uses."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def pending_reconnect(self) -> bool:
        """C{True} while an automatic reconnection is scheduled."""
        return self._reconnect_call is not None

    # -- events --------------------------------------------------------------

    def _emit_local(self, event: str, *args: Any) -> None:
        handlers = self._handlers.get(event)
        if not handlers:
            if event == "error":
                error = args[0]
                if isinstance(error, (SocketProtocolError, BadConnectionError)):
                    self._log.debug("{socket!r}: {error!r}", socket=self, error=error)
                else:
                    self._log.warn("{socket!r}: unhandled error {error!r}",
                                   socket=self, error=error)
            return
        for handler in list(handlers):
            _call_safely("a {!r} handler".format(event), handler, *args)

    # -- connecting ----------------------------------------------------------

    def connect(self) -> Deferred["SCClientSocket"]:
        """
        Connect (or reconnect) to the server.

        @return: a Deferred firing with this socket once the handshake
            completed; see the module's L{connect}.  Cancelling it
            disconnects.
        """
        if self.state == self.OPEN:
            return defer.succeed(self)

        def cancel(d: Deferred[SCClientSocket]) -> None:
            if d in self._connect_waiters:
                self._connect_waiters.remove(d)
            if self.state != self.OPEN:
                self.disconnect()

        d: Deferred[SCClientSocket] = defer.Deferred(cancel)
        self._connect_waiters.append(d)
        if self.state == self.CLOSED:
            self._cancel_reconnect()
            self._dial()
        return d

    def _dial(self) -> None:
        self.state = self.CONNECTING
        self._handshake_error = None
        reactor = self.reactor
        factory = SCClientFactory(self, self.url, reactor, headers=self._headers,
                                   per_message_deflate=self._per_message_deflate)
        self._attempt = factory
        self._connect_call = reactor.callLater(self.connect_timeout, self._connect_timed_out)
        self._emit_local("connecting")
        if self._secure:
            context = self._ssl_context_factory
            if context is None:
                from twisted.internet.ssl import optionsForClientTLS

                context = optionsForClientTLS(self._host)
            factory.connector = reactor.connectSSL(
                self._host, self._port, factory, context, timeout=self.connect_timeout)
        else:
            factory.connector = reactor.connectTCP(
                self._host, self._port, factory, timeout=self.connect_timeout)

    def _connect_timed_out(self) -> None:
        self._connect_call = None
        attempt = self._attempt
        self._closed(4007, None, False)
        if attempt is not None:
            attempt.cancel()

    def _cancel_reconnect(self) -> None:
        if self._reconnect_call is not None:
            if self._reconnect_call.active():
                self._reconnect_call.cancel()
            self._reconnect_call = None

    def _reconnect(self) -> None:
        self._reconnect_call = None
        if self.state == self.CLOSED:
            self._dial()

    def _reconnect_delay(self, immediate: bool) -> float:
        attempt = self.connect_attempts
        self.connect_attempts += 1
        if immediate and attempt == 0:
            return 0
        options = self.reconnect_options
        initial = options["initial_delay"] + options["randomness"] * random.random()
        return min(initial * options["multiplier"] ** attempt, options["max_delay"])

    # -- the transport's seam --------------------------------------------------

    def connection_opened(self, attempt: SCClientFactory, protocol: "SCClientProtocol") -> None:
        """
        The WebSocket of C{attempt} opened (called by the transport): make
        its engine and send the handshake.

        An abandoned attempt's connection is closed at once.

        @param attempt: the factory of the connection attempt.
        @param protocol: the connection (an
            L{scserver._engine.IEngineOutput}).
        """
        if attempt is not self._attempt or self.state != self.CONNECTING:
            protocol.close(1000, "")
            return
        if self._connect_call is not None:
            if self._connect_call.active():
                self._connect_call.cancel()
            self._connect_call = None
        engine = _engine.ProtocolEngine(
            self.codec, self.reactor, self, protocol,
            role=_engine.CLIENT,
            protocol_version=self.protocol_version,
            ping_timeout=self.ping_timeout,
            ping_timeout_disabled=self.ping_timeout_disabled,
            ack_timeout=self.ack_timeout,
            next_cid=self._next_cid,
        )
        self._engine = engine
        self._protocol = self._last_protocol = protocol

        def on_reply(error: Any, status: Any) -> None:
            if self._engine is engine and self.state == self.CONNECTING:
                self._handshake_replied(error, status)

        engine.emit("#handshake", {"authToken": self._stored_token}, on_reply)

    def receive(self, protocol: "SCClientProtocol", payload: Union[str, bytes]) -> None:
        """
        Handle one message of the connection C{protocol} (called by the
        transport); a message of a connection that is no longer this
        socket's is dropped.

        @param payload: C{str} for a text frame, C{bytes} for a binary one.
        """
        if protocol is self._protocol:
            self._engine.receive(payload)

    def connection_failed(self, attempt: SCClientFactory, reason: Failure) -> None:
        """The TCP (or TLS) connection of C{attempt} failed (called by the transport)."""
        if attempt is self._attempt:
            self._closed(1006, reason.getErrorMessage(), False)

    def connection_closed(self, attempt: SCClientFactory, protocol: "SCClientProtocol",
                          code: int, reason: Optional[str]) -> None:
        """
        The connection C{protocol} of C{attempt} closed with C{code} and
        C{reason} (called by the transport).
        """
        if protocol is self._protocol:
            self._engine.connection_lost(code, reason)
        elif self._protocol is None and attempt is self._attempt:
            # The WebSocket upgrade failed: there is no engine yet.
            self._closed(code, reason, False)

    # -- the engine's owner ----------------------------------------------------

    def engine_message(self, payload: Union[str, bytes]) -> None:
        """Engine owner: an inbound message (nothing to do for a client)."""

    def engine_handshake(self, cid: Optional[CallId], data: Any) -> None:
        """Engine owner: only a server engine reports a handshake."""

    def engine_pong(self) -> None:
        """Engine owner: only a server engine reports pongs."""

    def engine_raw(self, message: Any) -> None:
        """Engine owner: a message that is not a packet; emit C{'raw'}."""
        self._emit_local("raw", message)

    def engine_error(self, error: Any) -> None:
        """Engine owner: emit C{'error'}."""
        self._emit_local("error", error)

    def engine_closed(self, code: int, reason: Any, was_open: bool) -> None:
        """Engine owner: the connection closed."""
        self._closed(code, reason, was_open)

    def engine_event(self, event: str, data: Any, cid: Optional[CallId]) -> None:
        """Engine owner: the server sent an event."""
        if event == "#publish":
            if type(data) is dict:
                name = data.get("channel")
                channel = self._channels.get(name) if type(name) is str else None
                if channel is not None and channel.state != channel.UNSUBSCRIBED:
                    if channel.recover:
                        offset, epoch = data.get("offset"), data.get("epoch")
                        if type(offset) is int and type(epoch) is str:
                            channel.offset, channel.epoch = offset, epoch
                    channel._deliver(data.get("data"))
            return
        respond = Responder(self._engine.respond, cid, self._responded_twice)
        if event == "#setAuthToken":
            token = data.get("token") if type(data) is dict else None
            if not isinstance(token, str):
                respond(InvalidMessageError("No token data provided by #setAuthToken event"))
                return
            self._stored_token = token
            self._set_authenticated(token)
            respond()
        elif event == "#removeAuthToken":
            old = self._stored_token
            self._stored_token = None
            self._emit_local("removeAuthToken", old)
            self._set_unauthenticated()
            respond()
        elif event == "#kickOut":
            if type(data) is dict:
                name = data.get("channel")
                channel = self._channels.get(name) if isinstance(name, str) else None
                if channel is not None:
                    self._emit_local("kickOut", data.get("message"), name)
                    self._unsubscribe_channel(channel, kicked=True)
        elif event in _LOCAL_EVENTS:
            self._log.debug("Ignored a server event with a reserved name: {event!r}", event=event)
        else:
            handlers = self._handlers.get(event)
            if handlers:
                call_handlers(handlers, event, data, respond, cid is not None)

    def _responded_twice(self, cid: CallId) -> None:
        _log.warn("A response to call {cid!r} was already sent", cid=cid)

    # -- auth state ------------------------------------------------------------

    def _set_authenticated(self, signed_token: str) -> None:
        self.signed_auth_token = signed_token
        self.auth_token = decode_auth_token(signed_token)
        if self.auth_state != self.AUTHENTICATED:
            old = self.auth_state
            self.auth_state = self.AUTHENTICATED
            self._process_pending_subscriptions()
            self._emit_local("authStateChange", {
                "oldState": old,
                "newState": self.AUTHENTICATED,
                "signedAuthToken": signed_token,
                "authToken": self.auth_token,
            })
        self._emit_local("authenticate", signed_token)

    def _set_unauthenticated(self) -> None:
        if self.auth_state == self.UNAUTHENTICATED:
            return
        old_state = self.auth_state
        old_token = self.signed_auth_token
        self.auth_state = self.UNAUTHENTICATED
        self.signed_auth_token = None
        self.auth_token = None
        self._emit_local("authStateChange", {"oldState": old_state, "newState": self.UNAUTHENTICATED})
        self._emit_local("deauthenticate", old_token)

    # -- handshake and closing -------------------------------------------------

    def _handshake_replied(self, error: Any, status: Any) -> None:
        engine = self._engine
        if error is not None:
            if isinstance(error, BaseException):
                code = getattr(error, "statusCode", None)
                reason = "{}: {}".format(getattr(error, "name", type(error).__name__), error)
            else:
                code, reason = None, str(error)
            if type(code) is not int and type(status) is dict:
                code = status.get("code")
            if type(code) is not int:
                code = 4003
            self._handshake_error = as_exception(error)
            self._emit_local("error", self._handshake_error)
            engine.close(code, reason, notify_peer=False)
            return
        status = status if type(status) is dict else {}
        self.id = status.get("id")
        ping_timeout = status.get("pingTimeout")
        if isinstance(ping_timeout, (int, float)) and not isinstance(ping_timeout, bool):
            self.ping_timeout = ping_timeout / 1000.0
        self.state = self.OPEN
        engine.handshake_done(ping_timeout=self.ping_timeout)
        if status.get("isAuthenticated") and self._stored_token is not None:
            self._set_authenticated(self._stored_token)
        else:
            self._set_unauthenticated()
        self.connect_attempts = 0
        self._process_pending_subscriptions()
        self._emit_local("connect", status)
        if self.state != self.OPEN:
            return
        buffered, self._buffer = self._buffer, []
        now = self.reactor.seconds()
        for item in buffered:
            timeout = None
            if item.timer is not None:
                if item.timer.active():
                    item.timer.cancel()
                timeout = max(0, item.deadline - now)
            data = _engine.MISSING if item.data is _engine.MISSING else item.data
            engine.emit(item.event, data, item.callback, timeout, cid=item.cid)
        waiters, self._connect_waiters = self._connect_waiters, []
        for d in waiters:
            d.callback(self)

    def _closed(self, code: int, reason: Any, was_open: bool) -> None:
        """
        The connection closed (or the attempt failed): reset the connection
        state, suspend the channels, fail the buffered events, emit the
        events and decide about reconnecting.  The engine fails the requests
        that were waiting for a reply right after this.
        """
        if self.state == self.CLOSED:
            return
        self._engine = None
        self._protocol = None
        self._attempt = None
        self.state = self.CLOSED
        self.id = None
        if self._connect_call is not None:
            if self._connect_call.active():
                self._connect_call.cancel()
            self._connect_call = None

        kind = "disconnect" if was_open else "connectAbort"
        buffered, self._buffer = self._buffer, []
        reconnect = (self.auto_reconnect and not self._closing_by_user
                     and code != 1000 and not (type(code) is int and code >= 4500))

        error: Optional[BaseException] = socket_protocol_error(code, reason)
        if error is not None:
            self._emit_local("error", error)

        for channel in list(self._channels.values()):
            if channel.state != channel.UNSUBSCRIBED:
                self._suspend_channel(channel)

        for item in buffered:
            if item.timer is not None and item.timer.active():
                item.timer.cancel()
            if item.callback is not None and item.event != "#subscribe":
                _call_safely("the callback of {!r}".format(item.event),
                             item.callback,
                             _engine.aborted_error(item.event, code, reason, was_open), None)

        if reconnect:
            delay = self._reconnect_delay(immediate=code in (4000, 4001, 1005))
            self._reconnect_call = self.reactor.callLater(delay, self._reconnect)

        self._emit_local(kind, code, reason)
        self._emit_local("close", code, reason)

        if not reconnect:
            error = self._handshake_error
            if error is None:
                error = _engine.aborted_error(None, code, reason, was_open)
            waiters, self._connect_waiters = self._connect_waiters, []
            for d in waiters:
                d.errback(error)
            for channel in list(self._channels.values()):
                channel._settle(_engine.aborted_error(None, code, reason, was_open))

    def disconnect(self, code: int = 1000, reason: Any = None) -> Deferred[None]:
        """
        Close the connection; no automatic reconnection follows.

        A v1 socket that is open sends C{#disconnect} (with C{reason} as its
        data) first; a v2 socket puts C{reason} (a string) in the close
        frame.  The C{'disconnect'} (or C{'connectAbort'}) event fires at
        once.

        @return: a Deferred firing when the connection is closed.
        """
        if type(code) is not int:
            raise InvalidArgumentsError("The code must be an integer")
        self._cancel_reconnect()
        if self.state != self.CLOSED:
            attempt, engine = self._attempt, self._engine
            self._closing_by_user = True
            try:
                if engine is not None:
                    engine.close(code, reason)
                else:
                    self._closed(code, reason, False)
            finally:
                self._closing_by_user = False
            if engine is None and attempt is not None:
                attempt.cancel()
        else:
            waiters, self._connect_waiters = self._connect_waiters, []
            for waiter in waiters:
                waiter.errback(BadConnectionError(
                    "The socket was disconnected", type="connectAbort"))
        if self._last_protocol is not None:
            return self._last_protocol.when_closed()
        return defer.succeed(None)

    # -- outbound ---------------------------------------------------------------

    def _next_cid(self) -> int:
        self._cid += 1
        return self._cid

    def _buffered_timed_out(self, item: _Buffered) -> None:
        if item in self._buffer:
            self._buffer.remove(item)
            item.timer = None
            error = TimeoutError("Event response for {!r} timed out".format(item.event))
            # (an item with a timer has a callback)
            _call_safely("the callback of {!r}".format(item.event), item.callback, error, None)  # type: ignore[arg-type]

    def _transmit(self, event: str, data: Any = None,
                  callback: Optional[Callable[[Any, Any], object]] = None, timeout: bool = True,
                  has_data: Optional[bool] = None) -> Optional[int]:
        """
        Send an event, now when open, else into the buffer while connecting
        or reconnecting.  Raises when it cannot be encoded; a callback gets a
        L{BadConnectionError} when the socket is closed for good.

        @param timeout: whether the reply may time out (C{ack_timeout}).
        @return: the cid of the request, or C{None}.
        """
        if not (has_data or (has_data is None and data is not None)):
            data = _engine.MISSING
        if self.state == self.OPEN:
            return self._engine.emit(event, data, callback,
                                     _engine.DEFAULT_TIMEOUT if timeout else None)
        packet = {"event": event}
        if data is not _engine.MISSING:
            packet["data"] = data
        self.codec.encode(packet)
        if self.state == self.CLOSED and self._reconnect_call is None:
            if callback is not None:
                error = BadConnectionError(
                    "Cannot send {!r}: the socket is closed".format(event), type="disconnect")
                _call_safely("the callback of {!r}".format(event), callback, error, None)
            else:
                self._log.debug("Dropped {event!r}: the socket is closed", event=event)
            return None
        cid = deadline = None
        if callback is not None:
            cid = self._next_cid()
            if timeout:
                deadline = self.reactor.seconds() + self.ack_timeout
        item = _Buffered(event, data, callback, cid, deadline, None)
        if deadline is not None:
            item.timer = self.reactor.callLater(self.ack_timeout, self._buffered_timed_out, item)
        self._buffer.append(item)
        return cid

    def _forget(self, cid: Optional[int]) -> None:
        """Stop waiting for the reply to C{cid}, sent or still buffered."""
        for item in self._buffer:
            if item.cid == cid:
                self._buffer.remove(item)
                if item.timer is not None and item.timer.active():
                    item.timer.cancel()
                return
        if self._engine is not None:
            self._engine.forget(cid)

    def emit(self, event: str, data: Any = None,
             callback: Optional[Callable[[Any, Any], object]] = None) -> None:
        """
        Send the event C{event} to the server.

        @param data: the event data (omitted from the packet when C{None}).
        @param callback: C{callback(error, data)} asks for a reply: it is
            called with the server's reply (C{error} is the hydrated error, or
            C{None}), or with an L{scserver.errors.TimeoutError} after
            C{ack_timeout}, or a L{scserver.errors.BadConnectionError} when
            the connection closes first.
        @raise Exception: when the packet cannot be encoded.

        While the socket connects or waits to reconnect, events are kept and
        sent after the handshake; on a socket closed for good they are
        dropped (a callback gets a L{scserver.errors.BadConnectionError}).
        """
        self._transmit(event, data, callback)

    def invoke(self, event: str, data: Any = None) -> Deferred[Any]:
        """
        Send C{event} and wait for the reply.

        @return: a Deferred firing with the reply data; it fails with the
            server's error (hydrated; a string or other non-error value is
            wrapped in an L{scserver.errors.RemoteError} whose C{value} is
            the original), an L{scserver.errors.TimeoutError} after
            C{ack_timeout} or a L{scserver.errors.BadConnectionError}.
            Cancelling it forgets the request.
        """
        return self._request(event, data)

    def _request(self, event: str, data: Any, has_data: Optional[bool] = None,
                 timeout: bool = True) -> Deferred[Any]:
        cids: list[Optional[int]] = []
        d, callback = _engine.reply_deferred(lambda: cids and self._forget(cids[0]))  # type: ignore[func-returns-value]
        try:
            cids.append(self._transmit(event, data, callback, timeout=timeout, has_data=has_data))
        except Exception:
            return defer.fail()
        return d

    def send(self, data: Union[str, bytes]) -> None:
        """
        Send a raw message, bypassing the codec: C{str} as a text frame,
        C{bytes} as a binary one.

        @raise InvalidActionError: when there is no WebSocket connection.
        """
        if self._engine is None:
            raise InvalidActionError("The socket has no connection")
        self._engine.send_raw(data)

    # -- pub/sub -----------------------------------------------------------------

    def subscribe(self, channel: str, wait_for_auth: bool = False,
                  data: Any = None, recover: bool = False) -> SCClientChannel:
        """
        Subscribe to C{channel}.

        Sent at once when the socket is open, else after the next handshake;
        a C{wait_for_auth} channel is sent only while authenticated.

        With C{recover}, the subscription opts in to recovery on a channel
        that keeps a history: the publications missed while disconnected
        are replayed when the socket subscribes again (see
        L{SCClientChannel.recovered}).  C{data} must then be C{None} or a
        dict (it is sent with a C{recover} key added).

        @return: the L{SCClientChannel} (the same object for the same name
            while it is known); wait for the server's acknowledgement with
            L{SCClientChannel.when_subscribed}.
        """
        if not isinstance(channel, str):
            raise InvalidArgumentsError("The channel name must be a string")
        if recover and data is not None and type(data) is not dict:
            raise InvalidArgumentsError("With recover, the subscription data must be a dict")
        existing = self._channels.get(channel)
        if existing is None:
            existing = SCClientChannel(self, channel, wait_for_auth, data, recover)
            self._channels[channel] = existing
        elif existing.state == existing.UNSUBSCRIBED:
            existing.wait_for_auth = wait_for_auth
            existing.data = data
            existing.recover = recover
        if existing.state == existing.UNSUBSCRIBED:
            existing.state = existing.PENDING
            self._try_subscribe(existing)
        return existing

    def _try_subscribe(self, channel: SCClientChannel) -> None:
        if self.state != self.OPEN or channel._request_cid is not None:
            return
        if channel.wait_for_auth and self.auth_state != self.AUTHENTICATED:
            return
        options: dict[str, Any] = {"channel": channel.name}
        if channel.wait_for_auth:
            options["waitForAuth"] = True
        if channel.recover:
            position: Any = True
            if channel.offset is not None and channel.epoch is not None:
                position = {"offset": channel.offset, "epoch": channel.epoch}
            options["data"] = dict(channel.data or {}, recover=position)
        elif channel.data is not None:
            options["data"] = channel.data

        def on_reply(error: Any, _data: Any) -> None:
            if channel._request_cid != cid:
                return
            channel._request_cid = None
            if error is not None:
                if isinstance(error, BadConnectionError):
                    return
                if channel.wait_for_auth and self.auth_state != self.AUTHENTICATED:
                    return
                if channel.state == channel.UNSUBSCRIBED:
                    return
                channel.state = channel.UNSUBSCRIBED
                self._forget_if_unwatched(channel)
                self._emit_local("subscribeFail", error, channel.name, options)
                channel._settle(error)
                return
            if channel.state != channel.PENDING:
                return
            if channel.recover and type(_data) is dict:
                self._recovery_reply(channel, _data)
            channel.state = channel.SUBSCRIBED
            self._emit_local("subscribe", channel.name, options)
            channel._settle()

        cid = self._transmit("#subscribe", options, on_reply, timeout=False)
        channel._request_cid = cid

    def _recovery_reply(self, channel: SCClientChannel, reply: dict[str, Any]) -> None:
        channel.recovered = reply.get("recovered") is True
        offset, epoch = reply.get("offset"), reply.get("epoch")
        if channel.recovered or type(offset) is not int or type(epoch) is not str:
            return
        # A new baseline, unless publications past it came first.
        if channel.epoch != epoch or channel.offset is None or channel.offset < offset:
            channel.offset, channel.epoch = offset, epoch

    def _process_pending_subscriptions(self) -> None:
        if self.state != self.OPEN:
            return
        for channel in list(self._channels.values()):
            if channel.state == channel.PENDING:
                self._try_subscribe(channel)

    def _cancel_subscribe_request(self, channel: SCClientChannel) -> None:
        cid = channel._request_cid
        if cid is not None:
            channel._request_cid = None
            self._forget(cid)

    def _suspend_channel(self, channel: SCClientChannel) -> None:
        was_subscribed = channel.state == channel.SUBSCRIBED
        channel.state = channel.PENDING
        channel._request_cid = None
        if was_subscribed:
            self._emit_local("unsubscribe", channel.name)

    def _unsubscribe_channel(self, channel: SCClientChannel, kicked: bool = False) -> str:
        was = channel.state
        channel.state = channel.UNSUBSCRIBED
        self._cancel_subscribe_request(channel)
        self._forget_if_unwatched(channel)
        if was == channel.SUBSCRIBED:
            self._emit_local("unsubscribe", channel.name)
        channel._settle(InvalidActionError(
            "Channel {!r} was {} before the subscription completed".format(
                channel.name, "kicked out" if kicked else "unsubscribed")))
        return was

    def _forget_if_unwatched(self, channel: SCClientChannel) -> None:
        if not channel._watchers and self._channels.get(channel.name) is channel:
            del self._channels[channel.name]

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe from C{channel} (a name)."""
        existing = self._channels.get(channel)
        if existing is None or existing.state == existing.UNSUBSCRIBED:
            return
        self._unsubscribe_channel(existing)
        if self.state == self.OPEN:
            self._transmit("#unsubscribe", channel)

    def channel(self, name: str) -> Optional[SCClientChannel]:
        """Return the L{SCClientChannel} called C{name}, or C{None}."""
        return self._channels.get(name)

    def subscriptions(self, include_pending: bool = False) -> list[str]:
        """Return the names of the subscribed (and perhaps pending) channels."""
        states = ("subscribed", "pending") if include_pending else ("subscribed",)
        return [name for name, ch in self._channels.items() if ch.state in states]

    def is_subscribed(self, channel: str, include_pending: bool = False) -> bool:
        """Return C{True} when subscribed (or pending) to C{channel}."""
        existing = self._channels.get(channel)
        if existing is None:
            return False
        return existing.state == existing.SUBSCRIBED or (
            include_pending and existing.state == existing.PENDING)

    def publish(self, channel: str, data: Any = None) -> Deferred[Any]:
        """
        Publish C{data} on C{channel}.

        @return: a Deferred firing with the server's acknowledgement data
            (usually C{None}); it fails like L{invoke}.
        """
        return self._request("#publish", {"channel": channel, "data": data})

    # -- authentication ------------------------------------------------------------

    def authenticate(self, signed_token: str) -> Deferred[dict[str, Any]]:
        """
        Authenticate with a signed JWT.

        @return: a Deferred firing with the status dict (C{isAuthenticated},
            C{authError} hydrated or C{None}); it fails with the server's
            error (a bad token, after which the socket is unauthenticated),
            a L{scserver.errors.TimeoutError} or a
            L{scserver.errors.BadConnectionError}.
        """
        d: Deferred[dict[str, Any]] = defer.Deferred()

        def callback(error: Any, status: Any) -> None:
            if type(status) is dict and status.get("isAuthenticated") is not None:
                status = dict(status)
                status["authError"] = hydrate_error(status.get("authError"))
            else:
                status = {"isAuthenticated": self.auth_state == self.AUTHENTICATED,
                          "authError": None}
            if error is not None:
                if not isinstance(error, (BadConnectionError, TimeoutError)):
                    self._set_unauthenticated()
                d.errback(as_exception(error))
                return
            self._stored_token = signed_token
            if status["isAuthenticated"]:
                self._set_authenticated(signed_token)
            else:
                self._set_unauthenticated()
            d.callback(status)

        try:
            self._transmit("#authenticate", signed_token, callback, has_data=True)
        except Exception:
            return defer.fail()
        return d

    def deauthenticate(self) -> None:
        """
        Forget the auth token and tell the server (C{#removeAuthToken}).
        """
        old = self._stored_token
        self._stored_token = None
        self._emit_local("removeAuthToken", old)
        if self.state != self.CLOSED:
            self._transmit("#removeAuthToken")
        self._set_unauthenticated()
