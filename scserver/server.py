"""
L{SCServer}: a SocketCluster server, as a Twisted service.
"""

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from ._events import EventEmitter
from .errors import InvalidArgumentsError, InvalidOptionsError
from .exchange import Exchange
from .middleware import (
    MIDDLEWARE_AUTHENTICATE,
    MIDDLEWARE_EMIT,
    MIDDLEWARE_HANDSHAKE_SC,
    MIDDLEWARE_HANDSHAKE_WS,
    MIDDLEWARE_PUBLISH_IN,
    MIDDLEWARE_PUBLISH_OUT,
    MIDDLEWARE_SUBSCRIBE,
    MiddlewareChain,
)
from .options import validate_options

__all__ = ["SCServer", "listen"]


def _resolve_codec(codec):
    if codec is None or codec == "json":
        from .codec import JSONCodec
        return JSONCodec()
    if codec in ("min-bin", "minbin", "msgpack"):
        from .codec import MinBinCodec
        return MinBinCodec()
    if isinstance(codec, str):
        raise InvalidOptionsError("Unknown codec engine {!r}".format(codec))
    if not (hasattr(codec, "encode") and hasattr(codec, "decode")):
        raise InvalidOptionsError("The codec engine must have encode() and decode()")
    return codec


def _resolve_broker(broker, reactor):
    if broker is None or broker == "memory":
        from .brokers.memory import MemoryBroker
        return MemoryBroker()
    if isinstance(broker, str):
        if broker.startswith(("redis://", "rediss://", "unix://")):
            try:
                from .brokers.redis import RedisBroker
            except ImportError:
                raise InvalidOptionsError("The Redis broker is not available in this version")
            return RedisBroker.from_url(broker, reactor=reactor)
        raise InvalidOptionsError("Unknown broker {!r}".format(broker))
    for name in ("start", "subscribe", "unsubscribe", "publish", "stop"):
        if not hasattr(broker, name):
            raise InvalidOptionsError("The broker must provide IBroker (missing {})".format(name))
    return broker


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
    @ivar exchange: the L{scserver.exchange.Exchange}.
    @ivar factory: the autobahn C{WebSocketServerFactory} to listen with.
    @ivar clients: socket id → L{scserver.SCServerSocket}, past the handshake.
    @ivar pending_clients: socket id → socket, still in the handshake.
    """

    MIDDLEWARE_HANDSHAKE_WS = MIDDLEWARE_HANDSHAKE_WS
    MIDDLEWARE_HANDSHAKE_SC = MIDDLEWARE_HANDSHAKE_SC
    MIDDLEWARE_AUTHENTICATE = MIDDLEWARE_AUTHENTICATE
    MIDDLEWARE_SUBSCRIBE = MIDDLEWARE_SUBSCRIBE
    MIDDLEWARE_PUBLISH_IN = MIDDLEWARE_PUBLISH_IN
    MIDDLEWARE_PUBLISH_OUT = MIDDLEWARE_PUBLISH_OUT
    MIDDLEWARE_EMIT = MIDDLEWARE_EMIT

    _log = Logger()

    def __init__(self, reactor=None, **options):
        EventEmitter.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.options = validate_options(options)
        self.codec = _resolve_codec(self.options["codec_engine"])
        self._middleware = MiddlewareChain(
            self._warn, emit_warnings=self.options["middleware_emit_warnings"])
        from .auth import AuthConfig, JWTAuthEngine
        self._auth_config = AuthConfig.from_options(self.options, log=self._log)
        self.auth_engine = JWTAuthEngine(now=getattr(reactor, "seconds", None))
        self.broker = _resolve_broker(self.options["broker"], reactor)
        self.exchange = Exchange(self, self.broker)
        self.clients = {}
        self.pending_clients = {}
        self.is_ready = False
        self._ports = []
        self._protocols = set()
        self._resource = None
        from ._transport import SCServerFactory
        self.factory = SCServerFactory(self, reactor)
        self._start = None

    def __repr__(self):
        return "<SCServer {} clients>".format(len(self.clients))

    # -- properties ------------------------------------------------------

    @property
    def clients_count(self):
        """The number of sockets past the handshake."""
        return len(self.clients)

    @property
    def pending_clients_count(self):
        """The number of sockets still in the handshake."""
        return len(self.pending_clients)

    @property
    def path(self):
        """The URL path of the WebSocket endpoint."""
        return self.options["path"]

    @property
    def resource(self):
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

    def set_codec_engine(self, codec):
        """Use C{codec} (an L{scserver.interfaces.ICodecEngine}) for new sockets."""
        self.codec = _resolve_codec(codec)

    def set_auth_engine(self, engine):
        """Use C{engine} (an L{scserver.interfaces.IAuthEngine}) to sign and verify tokens."""
        if not (hasattr(engine, "sign_token") and hasattr(engine, "verify_token")):
            raise InvalidArgumentsError("The auth engine must provide IAuthEngine")
        self.auth_engine = engine

    def add_middleware(self, type, fn):
        """
        Add the middleware C{fn(req, next)} of C{type} (one of the
        C{MIDDLEWARE_*} constants).

        @raise InvalidArgumentsError: for an unknown type.
        """
        self._middleware.add(type, fn)

    def remove_middleware(self, type, fn):
        """Remove the middleware C{fn} of C{type}."""
        self._middleware.remove(type, fn)

    # -- service ---------------------------------------------------------

    def startService(self):
        """Start the broker; the C{'ready'} event follows once it is ready."""
        Service.startService(self)
        self._ensure_started()

    def _ensure_started(self):
        if self._start is None:
            self._start = maybeDeferred(self.broker.start, self.exchange._deliver)
            self._start.addCallbacks(self._ready, self._broker_failed)
        return self._start

    def _ready(self, _):
        self.is_ready = True
        self._emit("ready")

    def _broker_failed(self, failure):
        self._emit("error", failure.value)
        self._log.failure("The broker failed to start", failure)

    def stopService(self):
        """Close the server (see L{close})."""
        Service.stopService(self)
        return self.close()

    def listen(self, endpoint):
        """
        Listen for connections on C{endpoint}: an endpoint description
        string (C{"tcp:8000:interface=127.0.0.1"}), a port number, or an
        C{IStreamServerEndpoint}.  Starts the server if needed.

        @return: a Deferred firing with the C{IListeningPort}.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
        if isinstance(endpoint, int):
            endpoint = TCP4ServerEndpoint(self.reactor, endpoint)
        elif isinstance(endpoint, str):
            endpoint = serverFromString(self.reactor, endpoint)
        elif not IStreamServerEndpoint.providedBy(endpoint):
            raise InvalidArgumentsError(
                "listen() takes an endpoint string, a port number or an IStreamServerEndpoint")
        if not self.running:
            self.startService()
        d = endpoint.listen(self.factory)

        def listening(port):
            self._ports.append(port)
            return port

        return d.addCallback(listening)

    def close(self):
        """
        Stop listening, close every socket, stop the broker.

        @return: a Deferred firing when every port stopped listening and
            every connection is closed.
        """
        self.is_ready = False
        waits = [maybeDeferred(port.stopListening) for port in self._ports]
        self._ports = []
        waits.extend(_when_closed(protocol) for protocol in list(self._protocols))
        for socket in list(self.pending_clients.values()) + list(self.clients.values()):
            socket.disconnect(1001, "Server is shutting down")
        d = DeferredList(waits, consumeErrors=True)
        d.addCallback(lambda _: maybeDeferred(self.broker.stop))
        d.addCallback(self._stopped)
        return d

    def _stopped(self, _):
        self._start = None

    # -- sockets ---------------------------------------------------------

    def _add_pending(self, socket):
        self.pending_clients[socket.id] = socket
        protocol = socket._output
        if hasattr(protocol, "closed"):
            self._protocols.add(protocol)

    def _promote(self, socket):
        self.pending_clients.pop(socket.id, None)
        self.clients[socket.id] = socket

    def _remove(self, socket):
        self.pending_clients.pop(socket.id, None)
        self.clients.pop(socket.id, None)
        self._protocols.discard(socket._output)

    def _prepare_message(self, payload):
        if type(payload) is str:
            return self.factory.prepareMessage(payload.encode("utf-8"), False)
        return self.factory.prepareMessage(bytes(payload), True)

    def _verify_token(self, signed, socket):
        config = self._auth_config
        return self.auth_engine.verify_token(signed, config.verification_key, {
            "algorithms": config.verify_algorithms,
            "leeway": config.leeway,
            "socket": socket,
        })

    def _warn(self, error):
        self._emit("warning", error)


def _when_closed(protocol):
    closed = protocol.closed
    if closed is None:
        return succeed(None)
    waiter = Deferred()

    def fire(result):
        waiter.callback(None)
        return result

    closed.addBoth(fire)
    return waiter


def listen(endpoint, reactor=None, **options):
    """
    Create an L{SCServer} with C{options} and listen on C{endpoint}.

    @return: a Deferred firing with the server once it listens.
    """
    server = SCServer(reactor=reactor, **options)
    return server.listen(endpoint).addCallback(lambda _: server)
