"""
L{SCServer}: a SocketCluster server, as a Twisted service.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer
from twisted.python.failure import Failure

from ._logging import observer as log_observer
from ._events import EventEmitter
from .errors import InvalidActionError, InvalidArgumentsError
from .exchange import Exchange
from .interfaces import IAttachableBroker, IAuthEngine, IBroker, ICodecEngine
from .middleware import (
    MIDDLEWARE_AUTHENTICATE,
    MIDDLEWARE_EMIT,
    MIDDLEWARE_HANDSHAKE_SC,
    MIDDLEWARE_HANDSHAKE_WS,
    MIDDLEWARE_PRESENCE,
    MIDDLEWARE_PUBLISH_IN,
    MIDDLEWARE_PUBLISH_OUT,
    MIDDLEWARE_SUBSCRIBE,
    MiddlewareChain,
)
from .options import resolve_broker, resolve_codec_engine, validate_options
from .socket import IServerSocketOutput, ISocketRegistry, SCServerSocket

if TYPE_CHECKING:
    from twisted.web.resource import IResource

    from ._inspect import Inspector

    from ._transport import UpgradeRequest

__all__ = ["SCServer", "listen"]


MAX_COOLING_ADDRESSES = 65536
"""The most addresses a server remembers as cooling down (the oldest are
forgotten first)."""


@implementer(ISocketRegistry)
class _SocketRegistry:
    """
    The sockets of one server by state, and the connections to wait for on
    close (an L{scserver.socket.ISocketRegistry}).
    """

    def __init__(self) -> None:
        self.pending: dict[str, SCServerSocket] = {}
        self.clients: dict[str, SCServerSocket] = {}
        self.connections: dict[str, Any] = {}
        # The WebSocket connections admitted (from their upgrade request
        # until they are gone), in all and by remote address.
        self.admitted = 0
        self.admitted_by_address: dict[Optional[str], int] = {}
        # Addresses cut off for exceeding the inbound budget: until when
        # they cool down, in the order they were cut off.
        self.cooling_until: OrderedDict[str, float] = OrderedDict()

    def admit(self, address: Optional[str], limit: Optional[int],
              per_address: Optional[int]) -> Optional[int]:
        """
        Count a new connection from C{address}, unless C{limit} connections
        are open (then return 503), or C{per_address} from this address
        (then return 429).
        """
        if limit is not None and self.admitted >= limit:
            return 503
        count = self.admitted_by_address.get(address, 0)
        if per_address is not None and address is not None and count >= per_address:
            return 429
        self.admitted += 1
        self.admitted_by_address[address] = count + 1
        return None

    def release(self, address: Optional[str]) -> None:
        """An admitted connection from C{address} is gone."""
        count = self.admitted_by_address.get(address, 0)
        if count <= 0:
            return
        self.admitted -= 1
        if count == 1:
            del self.admitted_by_address[address]
        else:
            self.admitted_by_address[address] = count - 1

    def cool_down(self, address: str, until: float) -> None:
        """Remember that C{address} cools down until C{until} (a bounded table)."""
        cooling = self.cooling_until
        cooling.pop(address, None)
        cooling[address] = until
        while len(cooling) > MAX_COOLING_ADDRESSES:
            cooling.popitem(last=False)

    def cooling(self, address: Optional[str], now: float) -> bool:
        """Is C{address} cooling down at C{now}?"""
        until = self.cooling_until.get(address) if address is not None else None
        if until is None:
            return False
        if until <= now:
            del self.cooling_until[address]  # type: ignore[arg-type]
            return False
        return True

    def add(self, socket: SCServerSocket, output: IServerSocketOutput) -> None:
        """A new socket, in its handshake, writing to C{output}."""
        self.pending[socket.id] = socket
        if getattr(output, "closed", None) is not None:
            self.connections[socket.id] = output

    def promote(self, socket: SCServerSocket) -> None:
        """C{socket} completed its handshake."""
        self.pending.pop(socket.id, None)
        self.clients[socket.id] = socket

    def remove(self, socket: SCServerSocket) -> None:
        """C{socket} closed."""
        self.pending.pop(socket.id, None)
        self.clients.pop(socket.id, None)
        self.connections.pop(socket.id, None)


class SCServer(EventEmitter, Service):
    """
    A SocketCluster server.

    Create it with the options of L{scserver.options.OPTIONS} (durations in
    seconds), add handlers and middleware, then L{listen} on endpoints or
    mount L{resource} in a C{twisted.web} site.

    @ivar options: the validated options.
    @ivar reactor: the reactor this server uses.
    @ivar codec: the L{scserver.interfaces.ICodecEngine} in use.
    @ivar auth_engine: the L{scserver.interfaces.IAuthEngine} in use.
    @ivar auth_config: the L{scserver.auth.AuthConfig}: keys, algorithms,
        default expiry and leeway (they may be changed at run time, e.g. to
        rotate keys).
    @ivar middleware: the L{scserver.middleware.MiddlewareChain} of this
        server (add to it with L{add_middleware}).
    @ivar exchange: the L{scserver.exchange.Exchange}.
    @ivar factory: the autobahn C{WebSocketServerFactory} to listen with.
    @ivar clients: socket id → L{scserver.SCServerSocket}, past the handshake.
    @ivar pending_clients: socket id → socket, still in the handshake.
    @ivar stats: the L{scserver._metrics.ServerStats} of this server.
    @ivar metrics_registry: the C{prometheus_client} C{CollectorRegistry}
        served at the C{metrics_path} option (this server's own, not the
        global one; register application metrics in it).
    @ivar inspector: the L{scserver._inspect.Inspector} of the live
        inspection page (the C{inspect_path} option), or C{None}.
    """

    MIDDLEWARE_HANDSHAKE_WS = MIDDLEWARE_HANDSHAKE_WS
    MIDDLEWARE_HANDSHAKE_SC = MIDDLEWARE_HANDSHAKE_SC
    MIDDLEWARE_AUTHENTICATE = MIDDLEWARE_AUTHENTICATE
    MIDDLEWARE_SUBSCRIBE = MIDDLEWARE_SUBSCRIBE
    MIDDLEWARE_PUBLISH_IN = MIDDLEWARE_PUBLISH_IN
    MIDDLEWARE_PUBLISH_OUT = MIDDLEWARE_PUBLISH_OUT
    MIDDLEWARE_EMIT = MIDDLEWARE_EMIT
    MIDDLEWARE_PRESENCE = MIDDLEWARE_PRESENCE

    _log = Logger(observer=log_observer)

    def __init__(self, reactor: Any = None, **options: Any) -> None:
        EventEmitter.__init__(self)
        from ._metrics import ServerStats, server_registry
        self.stats: ServerStats = ServerStats()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor: Any = reactor
        self.options: dict[str, Any] = validate_options(options)
        self.codec: ICodecEngine = resolve_codec_engine(self.options["codec_engine"])
        self.middleware: MiddlewareChain = MiddlewareChain(
            self._warn, emit_warnings=self.options["middleware_emit_warnings"], clock=reactor)
        from .auth import AuthConfig, JWTAuthEngine
        self.auth_config: AuthConfig = AuthConfig.from_options(self.options, log=self._log)
        self.auth_engine: IAuthEngine = JWTAuthEngine(now=getattr(reactor, "seconds", None))
        self.broker: IBroker = resolve_broker(self.options["broker"], reactor)
        if IAttachableBroker.providedBy(self.broker):
            self.broker.attach(self.options, self._warn)
        self.exchange: Exchange = Exchange(
            self.broker, self._prepare_message, self._warn,
            per_recipient=lambda: self.middleware.has(MIDDLEWARE_PUBLISH_OUT),
            clock=reactor)
        from ._presence import PresenceTracker
        self.exchange.presence_tracker = PresenceTracker(
            self.exchange, self.broker, reactor, self.options, self.middleware)
        for spec in self.options["history_channels"] or ():
            self.exchange.configure_channel(spec.pattern, spec.size, spec.ttl)
        self._registry = _SocketRegistry()
        self.clients: dict[str, SCServerSocket] = self._registry.clients
        self.pending_clients: dict[str, SCServerSocket] = self._registry.pending
        self.is_ready = False
        self.metrics_registry = server_registry(self)
        self.inspector: Optional[Inspector] = None
        if self.options["inspect_path"]:
            from ._inspect import Inspector
            self.inspector = Inspector(self)
        self._ports: list[IListeningPort] = []
        self._resource: Optional[IResource] = None
        from ._transport import SCServerFactory
        self.factory: SCServerFactory = SCServerFactory(self, reactor)
        self._start: Optional[Deferred[Any]] = None
        self._closing: Optional[Deferred[Any]] = None

    def __repr__(self) -> str:
        return "<SCServer {} clients>".format(len(self.clients))

    # -- properties ------------------------------------------------------

    @property
    def clients_count(self) -> int:
        """The number of sockets past the handshake."""
        return len(self.clients)

    @property
    def pending_clients_count(self) -> int:
        """The number of sockets still in the handshake."""
        return len(self.pending_clients)

    @property
    def connections_count(self) -> int:
        """
        The number of WebSocket connections admitted and not gone yet (from
        their upgrade request on; what C{max_connections} bounds).
        """
        return self._registry.admitted

    @property
    def path(self) -> str:
        """The URL path of the WebSocket endpoint."""
        return self.options["path"]

    @property
    def resource(self) -> "IResource":
        """
        A C{twisted.web} resource serving this server's WebSocket endpoint,
        to put into an existing site (at the C{path} option, typically).
        """
        if self._resource is None:
            from autobahn.twisted.resource import WebSocketResource
            self.factory.any_path = True
            self._resource = WebSocketResource(self.factory)
        return self._resource

    # -- configuration ---------------------------------------------------

    def set_codec_engine(self, codec: Union[ICodecEngine, str, None]) -> None:
        """Use C{codec} (an L{scserver.interfaces.ICodecEngine}) for new sockets."""
        self.codec = resolve_codec_engine(codec)

    def set_auth_engine(self, engine: IAuthEngine) -> None:
        """Use C{engine} (an L{scserver.interfaces.IAuthEngine}) to sign and verify tokens."""
        if not (hasattr(engine, "sign_token") and hasattr(engine, "verify_token")):
            raise InvalidArgumentsError("The auth engine must provide IAuthEngine")
        self.auth_engine = engine

    def add_middleware(self, type: str, fn: Callable[..., Any]) -> None:
        """
        Add the middleware C{fn(req, next)} of C{type} (one of the
        C{MIDDLEWARE_*} constants).

        @raise InvalidArgumentsError: for an unknown type.
        """
        self.middleware.add(type, fn)

    def remove_middleware(self, type: str, fn: Callable[..., Any]) -> None:
        """Remove the middleware C{fn} of C{type}."""
        self.middleware.remove(type, fn)

    # -- events ----------------------------------------------------------

    def emit(self, event: str, *args: Any) -> bool:
        """
        Fire the server event C{event} (C{'connection'}, C{'warning'}, ...)
        with C{args}: every handler added with C{on} is called.

        @return: whether any handler was called.
        """
        return self._emit(event, *args)

    # -- service ---------------------------------------------------------

    def startService(self) -> None:
        """
        Start the broker; the C{'ready'} event follows once it is ready.

        @raise InvalidActionError: while a L{close} is still under way.
        """
        if self._closing is not None:
            raise InvalidActionError(
                "The server is still closing; listen again once close() has fired")
        Service.startService(self)
        self._ensure_started()

    def _ensure_started(self) -> Deferred[Any]:
        if self._start is None:
            self._start = maybeDeferred(self.broker.start, self.exchange.deliver)
            self._start.addCallbacks(self._ready, self._broker_failed)
        return self._start

    def _ready(self, _: object) -> None:
        self.is_ready = True
        if self.inspector is not None and self.running:
            self.inspector.start()
        self._emit("ready")

    def _broker_failed(self, failure: Failure) -> None:
        self.stats.broker_errors += 1
        self._emit("error", failure.value)
        self._log.failure("The broker failed to start", failure)

    def stopService(self) -> Deferred[Any]:
        """Close the server (see L{close})."""
        return self.close()

    def listen(self, endpoint: Union[str, int, IStreamServerEndpoint]) -> Deferred[IListeningPort]:
        """
        Listen for connections on C{endpoint}: an endpoint description
        string (C{"tcp:8000:interface=127.0.0.1"}), a port number, or an
        C{IStreamServerEndpoint}.  Starts the server if needed; a server
        that was closed starts again.

        A port number, and a C{tcp:}, C{tcp6:} or C{ssl:} string without a
        C{backlog=}, listen with a backlog of
        L{scserver._endpoints.DEFAULT_BACKLOG} (1024) instead of Twisted's
        50; an endpoint object is used as it is.

        @return: a Deferred firing with the C{IListeningPort}.
        @raise InvalidActionError: while a L{close} is still under way.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString

        from ._endpoints import DEFAULT_BACKLOG, with_default_backlog
        if isinstance(endpoint, int):
            endpoint = TCP4ServerEndpoint(self.reactor, endpoint, backlog=DEFAULT_BACKLOG)
        elif isinstance(endpoint, str):
            endpoint = serverFromString(self.reactor, with_default_backlog(endpoint))
        elif not IStreamServerEndpoint.providedBy(endpoint):
            raise InvalidArgumentsError(
                "listen() takes an endpoint string, a port number or an IStreamServerEndpoint")
        if not self.running:
            self.startService()
        # endpoint is an IStreamServerEndpoint here (mypy cannot tell: the
        # endpoint functions above are untyped).
        d = endpoint.listen(self.factory)  # type: ignore[union-attr]

        def listening(port: IListeningPort) -> IListeningPort:
            self._ports.append(port)
            return port

        return d.addCallback(listening)

    def close(self) -> Deferred[Any]:
        """
        Stop the service: stop listening, close every socket (1001), stop
        the broker.  Once the returned Deferred has fired, L{listen} starts
        the server again; before that it raises.

        @return: a Deferred firing when every port stopped listening, every
            connection is closed and the broker stopped.
        """
        if self._closing is not None:
            return _chain(self._closing)
        if self.running:
            Service.stopService(self)
        self.is_ready = False
        if self.inspector is not None:
            self.inspector.stop()
        waits: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in self._ports]
        self._ports = []
        waits.extend(_when_closed(connection)
                     for connection in list(self._registry.connections.values()))
        for socket in list(self.pending_clients.values()) + list(self.clients.values()):
            socket.disconnect(1001, "Server is shutting down")
        d = self._closing = DeferredList(waits, consumeErrors=True)
        tracker = self.exchange.presence_tracker
        if tracker is not None:
            d.addCallback(lambda _: tracker.stop())
        d.addCallback(lambda _: maybeDeferred(self.broker.stop) if self._start is not None
                      else None)
        d.addBoth(self._stopped)
        return _chain(d)

    def _stopped(self, result: object) -> object:
        self._start = None
        self._closing = None
        return result

    # -- sockets ---------------------------------------------------------

    def accept(self, output: IServerSocketOutput, request: Optional["UpgradeRequest"] = None,
               clock: Any = None) -> SCServerSocket:
        """
        Make the L{scserver.SCServerSocket} of a new WebSocket connection
        (called by the transport, and by L{scserver.testing}).  The socket
        is pending until its handshake completes; the C{'handshake'} event
        fires with it.

        @param output: the connection (an
            L{scserver.socket.IServerSocketOutput}).
        @param request: the HTTP upgrade request, or C{None}.
        @param clock: the socket's C{IReactorTime}; the server's reactor by
            default.
        @return: the socket.
        """
        self._ensure_started()
        self.stats.connections += 1
        # _SocketRegistry provides ISocketRegistry without declaring it.
        socket = SCServerSocket(self, output, self._registry, request, clock=clock)
        self._registry.add(socket, output)
        self.emit("handshake", socket)
        return socket

    def admit_connection(self, address: Optional[str]) -> Optional[tuple[int, str]]:
        """
        Count a new WebSocket connection from C{address} (called by the
        transport on its upgrade request), within the C{max_connections}
        and C{max_connections_per_ip} options.  An admitted connection is
        given back with L{release_connection} once it is gone.

        @param address: the remote IP address, or C{None} (not counted per
            address).
        @return: C{None} when admitted; else the HTTP status and reason to
            refuse the upgrade with: C{(503, ...)} when the server is full,
            C{(429, ...)} when C{address} has too many connections.
        """
        options = self.options
        status = self._registry.admit(
            address, options["max_connections"], options["max_connections_per_ip"])
        if status is None:
            return None
        if status == 503:
            reason = "Server is at its connection limit ({})".format(options["max_connections"])
        else:
            reason = "Too many connections from {} (the limit is {})".format(
                address, options["max_connections_per_ip"])
        return status, reason

    def release_connection(self, address: Optional[str]) -> None:
        """A connection L{admit_connection} admitted is gone."""
        self._registry.release(address)

    def _prepare_message(self, payload: Any) -> Any:
        if type(payload) is str:
            return self.factory.prepareMessage(payload.encode("utf-8"), False)
        return self.factory.prepareMessage(bytes(payload), True)

    def _warn(self, error: Any) -> None:
        self._emit("warning", error)


def _chain(d: Deferred[Any]) -> Deferred[Any]:
    """A Deferred that fires with C{d}'s result, leaving C{d} itself alone."""
    waiter: Deferred[Any] = Deferred()
    d.addBoth(waiter.callback)
    return waiter


def _when_closed(protocol: Any) -> Deferred[None]:
    closed = protocol.closed
    if closed is None:
        return succeed(None)
    waiter: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        waiter.callback(None)
        return result

    closed.addBoth(fire)
    return waiter


def listen(endpoint: Union[str, int, IStreamServerEndpoint], reactor: Any = None,
           **options: Any) -> Deferred[SCServer]:
    """
    Create an L{SCServer} with C{options} and listen on C{endpoint}.

    @return: a Deferred firing with the server once it listens.
    """
    server = SCServer(reactor=reactor, **options)
    return server.listen(endpoint).addCallback(lambda _: server)
