"""
The autobahn/Twisted adapters of both roles: WebSocket framing, the HTTP
upgrade, the connection's end.

L{SCServerProtocol} is a thin adapter between autobahn's
C{WebSocketServerProtocol} and L{scserver.socket.SCServerSocket}: it checks
the upgrade request (path, origin, C{handshakeWS} middleware), has the server
make the socket (L{scserver.SCServer.accept}), feeds it every message
(L{scserver.SCServerSocket.receive}) and the end of the connection
(L{scserver.SCServerSocket.connection_lost}), and is the socket's output
(L{scserver.socket.IServerSocketOutput}): it writes payloads and closes.

L{SCClientProtocol} does the same for an L{scserver.client.SCClientSocket}:
it tells the client socket when the WebSocket opened or closed and feeds it
every message (C{connection_opened}, C{receive}, C{connection_closed}), and
is the output of the engine the client socket made for the connection.
"""

import fnmatch
from urllib.parse import urlsplit

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ._engine import IEngineOutput
from .errors import InvalidOptionsError, ServerProtocolError
from .middleware import MIDDLEWARE_HANDSHAKE_WS, Request
from .socket import IServerSocketOutput

__all__ = [
    "UpgradeRequest",
    "SCServerProtocol",
    "SCServerFactory",
    "SCClientProtocol",
    "SCClientFactory",
    "origin_allowed",
    "handshake_limit",
    "http_paths",
]

_CLOSE_TIMEOUT = 2.0

_CLOSING_BACKLOG = 65536
"""
Bytes a peer may have sent, unread, once the server started closing; past
them the connection is ended without waiting for the peer's close frame.
"""
"""Seconds a closing client WebSocket may take before its TCP connection is dropped."""

_END_OF_HEAD = b"\r\n\r\n"
"""What ends an HTTP request head."""


def handshake_limit(value):
    """
    Check the C{max_handshake_size} option.

    @param value: a positive number of bytes (an C{int} or a string of one),
        or C{None} for no limit.
    @return: the C{int}, or C{None}.
    @raise InvalidOptionsError: for anything else.
    """
    if value is None:
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidOptionsError(
            "max_handshake_size must be a positive integer (or None), not {!r}".format(value))
    if limit <= 0:
        raise InvalidOptionsError("max_handshake_size must be positive (or None)")
    return limit


def http_paths(options):
    """
    The plain HTTP endpoints of the C{health_path} and C{metrics_path}
    options.

    @return: a dict of path (bytes) to C{"health"} or C{"metrics"}; an
        empty or C{None} option has no entry.
    @raise InvalidOptionsError: for a path that does not start with C{/},
        or is the WebSocket path or the other endpoint's.
    """
    paths = {}
    for name, what in (("health_path", "health"), ("metrics_path", "metrics")):
        path = options.get(name)
        if not path:
            continue
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidOptionsError("{} must start with /, not {!r}".format(name, path))
        key = path.encode("utf-8")
        if path == options["path"] or key in paths:
            raise InvalidOptionsError(
                "{} {!r} is already the path of another endpoint".format(name, path))
        paths[key] = what
    return paths


class UpgradeRequest:
    """
    The HTTP upgrade request of a WebSocket connection.

    @ivar path: the request path with the query string.
    @ivar headers: a dict of lower-case header names to values.
    @ivar origin: the Origin header, or C{None}.
    @ivar peer: the peer, as autobahn describes it (C{'tcp:1.2.3.4:5678'}).
    @ivar params: the query parameters, a dict of lists.
    @ivar remote_address: the peer's IP address, or C{None}.
    """

    def __init__(self, path, headers, origin, peer, params, remote_address=None):
        self.path = path
        self.headers = headers
        self.origin = origin
        self.peer = peer
        self.params = params
        self.remote_address = remote_address

    def __repr__(self):
        return "<UpgradeRequest {} from {}>".format(self.path, self.peer)


def _origin_candidates(origin):
    parts = urlsplit(origin)
    host = parts.hostname
    if not host:
        return None
    port = parts.port
    if port is None:
        port = 443 if parts.scheme in ("https", "wss") else 80
    return host, str(port)


def origin_allowed(origin, patterns):
    """
    Return True when C{origin} (the Origin header) matches one of
    C{patterns} (C{'host:port'}, with C{*} wildcards in either part).

    A missing Origin (clients that are not browsers) is allowed.  Each
    pattern is matched as a whole, never as a substring.
    """
    if "*:*" in patterns:
        return True
    if origin is None or origin == "" or origin == "null":
        return True
    candidate = _origin_candidates(origin)
    if candidate is None:
        return False
    host, port = candidate
    for pattern in patterns:
        pattern_host, sep, pattern_port = pattern.rpartition(":")
        if not sep:
            pattern_host, pattern_port = pattern, "*"
        if fnmatch.fnmatchcase(host, pattern_host) and fnmatch.fnmatchcase(port, pattern_port):
            return True
    return False


@implementer(IPushProducer)
class _Backpressure:
    """
    Told by the TCP transport when its send buffer is full (paused) and
    when it drained (resumed): while paused, the protocol counts what it
    still queues, to cut off a client that stopped reading before it
    exhausts the server's memory.
    """

    def __init__(self, protocol):
        self._protocol = protocol

    def pauseProducing(self):
        if self._protocol._paused_bytes is None:
            self._protocol._paused_bytes = 0

    def resumeProducing(self):
        self._protocol._paused_bytes = None

    def stopProducing(self):
        self._protocol._paused_bytes = None


@implementer(IServerSocketOutput)
class SCServerProtocol(WebSocketServerProtocol):
    """
    One WebSocket connection of an L{scserver.SCServer}.
    """

    _log = Logger()
    sc_socket = None
    sc_request = None
    _stats = None
    _paused_bytes = None
    _outbound_limit = None
    _head = None
    _preopen_bytes = 0
    _admitted = None
    _turn_limit = None
    _turn_messages = 0
    _turn_call = None

    def connectionMade(self):
        """Set up the Deferred that fires when the connection is gone."""
        self.closed = Deferred()
        self._stats = self.factory.server.stats
        # The request head is gathered here, not in autobahn's buffer (see
        # _dataReceived).
        self._head = bytearray()
        self._preopen_bytes = 0
        WebSocketServerProtocol.connectionMade(self)

    def _dataReceived(self, data):
        """
        Before the upgrade completes: count the bytes the client sent
        (more than C{max_handshake_size}: answer 431 and close), gather
        the request head until its blank line, looking for it only in the
        new bytes and the 3 before them, and hand autobahn the whole head
        once: autobahn looks for the end of the head in its entire buffer on
        every read, which costs quadratic time in a head that never ends.
        Bytes that follow the head while C{onConnect} is under way
        (C{handshakeWS} middleware) are kept for once the WebSocket opens.
        """
        if self.state != WebSocketServerProtocol.STATE_CONNECTING:
            WebSocketServerProtocol._dataReceived(self, data)
            return
        self.trafficStats.preopenIncomingOctetsWireLevel += len(data)
        self._preopen_bytes += len(data)
        limit = self.factory.max_handshake_size
        if limit is not None and self._preopen_bytes > limit:
            self._head = None
            self.data = b""
            self.failHandshake(
                "Request header fields too large: more than {} bytes before the WebSocket"
                " upgrade".format(limit), 431)
            return
        head = self._head
        if head is None:
            # The head went to autobahn, whose onConnect has not finished.
            self.data += data
            return
        start = max(0, len(head) - 3)
        head += data
        if head.find(_END_OF_HEAD, start) < 0:
            return
        self._head = None
        self.data = bytes(head)
        self.consumeData()

    def onConnect(self, request):
        """Check the upgrade request: path, origin, then C{handshakeWS} middleware."""
        server = self.factory.server
        path = request.path
        if path != server.options["path"] and not self.factory.any_path:
            raise ConnectionDeny(400, "Bad Request")
        origin = request.origin
        if not origin_allowed(origin, server.options["origins"]):
            error_message = "Failed to authorize socket handshake - Invalid origin: {}".format(origin)
            server.emit("warning", ServerProtocolError(error_message))
            raise ConnectionDeny(403, error_message)
        query = ""
        raw = getattr(self, "http_request_uri", None)
        if raw and "?" in raw:
            query = "?" + raw.split("?", 1)[1]
        address = getattr(self.transport.getPeer(), "host", None)
        refused = server.admit_connection(address)
        if refused is not None:
            raise ConnectionDeny(*refused)
        self._admitted = (server, address)
        self.sc_request = UpgradeRequest(
            path + query, dict(request.headers), origin, request.peer, request.params, address)
        blocked = server.middleware.run(
            MIDDLEWARE_HANDSHAKE_WS, Request(MIDDLEWARE_HANDSHAKE_WS, request=self.sc_request))
        if blocked is None:
            return None
        return blocked.addCallback(self._handshake_ws_done)

    def _handshake_ws_done(self, blocked):
        if blocked is not None:
            error = blocked.error
            message = getattr(error, "message", None)
            if not isinstance(message, str):
                message = str(error)
            raise ConnectionDeny(401, message)
        return None

    def succeedHandshake(self, res):
        """
        Accept the upgrade, unless the connection was closed while
        C{onConnect} ran (the client left, or passed C{max_handshake_size},
        while C{handshakeWS} middleware decided): autobahn would open it
        all the same, and the socket it made would wait for a handshake on
        a dead connection.
        """
        if self.state != WebSocketServerProtocol.STATE_CONNECTING:
            return None
        return WebSocketServerProtocol.succeedHandshake(self, res)

    def processHandshake(self):
        """
        Answer a plain HTTP request (no upgrade) for the health or metrics
        path (see L{_answer_http}); hand anything else to autobahn.
        """
        if self.factory.http_paths and self._answer_http():
            return None
        return WebSocketServerProtocol.processHandshake(self)

    def _answer_http(self):
        """
        When the request head in C{self.data} is a C{GET} (or C{HEAD}) of
        the C{health_path} or C{metrics_path} without an C{Upgrade}
        header, answer it and close the connection.

        @return: whether the request was answered.
        """
        data = self.data
        end = data.find(_END_OF_HEAD)
        if end < 0:
            return False
        line_end = data.find(b"\r\n")
        parts = data[:line_end].split()
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return False
        what = self.factory.http_paths.get(parts[1].split(b"?", 1)[0])
        if what is None:
            return False
        for header in data[line_end + 2:end].split(b"\r\n"):
            if header.split(b":", 1)[0].strip().lower() == b"upgrade":
                return False
        server = self.factory.server
        if what == "health":
            if server.is_ready and server.running:
                code, status, body = 200, "OK", b"ok\n"
            else:
                code, status, body = 503, "Service Unavailable", b"not ready\n"
            content_type = "text/plain; charset=utf-8"
        else:
            from ._metrics import METRICS_CONTENT_TYPE, render
            code, status, body = 200, "OK", render(server.metrics_registry)
            content_type = METRICS_CONTENT_TYPE
        head = "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n" \
               "Cache-Control: no-store\r\nConnection: close\r\n\r\n".format(
                   code, status, content_type, len(body))
        self.data = b""
        self.wasNotCleanReason = "HTTP {} request answered".format(what)
        self.sendData(head.encode("ascii") + (body if parts[0] == b"GET" else b""))
        self.dropConnection(abort=False)
        return True

    def failHandshake(self, reason, code=400, responseHeaders=None):
        """Answer a refused upgrade with C{code} and C{reason} as a text body."""
        self.wasNotCleanReason = reason
        body = reason.encode("utf-8")
        status = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  404: "Not Found", 429: "Too Many Requests",
                  431: "Request Header Fields Too Large",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(code, "Error")
        head = "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\n" \
               "Content-Length: {}\r\nConnection: close\r\n".format(code, status, len(body))
        for name, value in responseHeaders or ():
            head += "{}: {}\r\n".format(name, value)
        self.sendData(head.encode("utf-8") + b"\r\n" + body)
        self.dropConnection(abort=False)

    def onOpen(self):
        """The WebSocket is open: create the L{scserver.SCServerSocket}."""
        self._outbound_limit = self.factory.server.options["max_outbound_buffer"]
        self._turn_limit = self.factory.server.options["max_messages_per_turn"]
        self._paused_bytes = None
        # Behind twisted.web the HTTP channel is the transport's producer
        # already; there the limit does not apply.
        if self._outbound_limit is not None and getattr(self.transport, "producer", None) is None:
            self.transport.registerProducer(_Backpressure(self), True)
        self.sc_socket = self.factory.server.accept(self, self.sc_request)

    def _queued(self, size):
        """
        Count C{size} bytes written while the transport's buffer is full;
        cut the client off once they pass C{max_outbound_buffer}.

        @return: C{True} when the message may be written.
        """
        if self._paused_bytes is None:
            return True
        self._paused_bytes += size
        if self._paused_bytes <= self._outbound_limit:
            return True
        socket = self.sc_socket
        self._log.warn(
            "Socket {id} stopped reading: {size} bytes queued for it; closing it (1008)",
            id=socket.id if socket else None, size=self._paused_bytes)
        self._paused_bytes = None
        self._stats.slow_consumers += 1
        if socket is not None:
            socket.connection_lost(1008, "Outbound buffer limit exceeded")
        self.dropConnection(abort=True)
        return False

    def consumeData(self):
        """
        Handle the frames read, at most C{max_messages_per_turn} messages at
        a time: past them, stop reading this connection and go on in a
        later reactor turn, so that a client flooding the server does not
        keep the others waiting.
        """
        limit = self._turn_limit
        if self.state == WebSocketServerProtocol.STATE_CLOSING and limit is not None \
                and len(self.data) > _CLOSING_BACKLOG:
            # The server closed (a flooder cut off, say) and the peer keeps
            # sending: its close reply is behind all that.  Stop reading,
            # let the close frame go out, and end the connection, rather
            # than parse what it sent.
            self.data = b""
            self.transport.pauseProducing()
            self.transport.loseConnection()
            return
        if limit is None or self.state != WebSocketServerProtocol.STATE_OPEN:
            WebSocketServerProtocol.consumeData(self)
            return
        if self._turn_call is not None:
            return  # yielding: the bytes wait in self.data
        # A read (a reactor turn: the reactor reads a connection once per
        # turn) starts a new count.
        self._turn_messages = 0
        while self._turn_messages < limit and self.processData() and \
                self.state == WebSocketServerProtocol.STATE_OPEN:
            pass
        if self._turn_messages >= limit and self.state == WebSocketServerProtocol.STATE_OPEN:
            self.transport.pauseProducing()
            self._turn_call = self.factory.reactor.callLater(0, self._next_turn)
        elif self.state == WebSocketServerProtocol.STATE_CLOSING:
            self.consumeData()  # closed meanwhile: bounded as above

    def _next_turn(self):
        self._turn_call = None
        self._turn_messages = 0
        if self.state == WebSocketServerProtocol.STATE_CLOSED:
            return
        # Closing too: the peer's close reply is still to be read.
        self.transport.resumeProducing()
        if self.data:
            self.consumeData()

    def onMessage(self, payload, isBinary):
        """Hand one message to the socket (autobahn checked a text frame's UTF-8)."""
        self._turn_messages += 1
        socket = self.sc_socket
        if socket is not None:
            socket.receive(payload if isBinary else payload.decode("utf-8"))

    def onClose(self, wasClean, code, reason):
        """Tell the socket the connection closed, with the code that applies."""
        socket = self.sc_socket
        if socket is not None:
            if self.closedByMe and self.localCloseCode not in (None, 1000):
                # autobahn closed the connection itself (invalid UTF-8 1007,
                # message too big 1009): report its code, not the echo.
                code, reason = self.localCloseCode, self.localCloseReason
            if code is None:
                code = 1005 if wasClean else 1006
            socket.connection_lost(code, reason or None)

    def connectionLost(self, reason):
        """Make sure the socket is closed, and fire L{closed}."""
        WebSocketServerProtocol.connectionLost(self, reason)
        # autobahn leaves its closing-handshake timer running when the TCP
        # connection goes before the peer's close reply (a client that
        # exits right after its close frame, typically over TLS): cancel
        # it, so that nothing of a closed connection stays in the reactor.
        call = getattr(self, "closeHandshakeTimeoutCall", None)
        if call is not None:
            self.closeHandshakeTimeoutCall = None
            call.cancel()
        socket = self.sc_socket
        if socket is not None:
            socket.connection_lost(1006, None)
        call, self._turn_call = self._turn_call, None
        if call is not None and call.active():
            call.cancel()
        admitted, self._admitted = self._admitted, None
        if admitted is not None:
            admitted[0].release_connection(admitted[1])
        closed, self.closed = self.closed, None
        if closed is not None:
            closed.callback(None)

    # -- the engine's output ---------------------------------------------

    def write(self, payload):
        """Send C{payload}: C{str} as a text message, C{bytes} as binary."""
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if type(payload) is str:
            payload = payload.encode("utf-8")
            binary = False
        else:
            payload = bytes(payload)
            binary = True
        stats = self._stats
        stats.messages_out += 1
        stats.bytes_out += len(payload)
        if self._paused_bytes is None or self._queued(len(payload)):
            self.sendMessage(payload, binary)

    def write_prepared(self, prepared):
        """Send a message prepared once for many connections."""
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        stats = self._stats
        stats.messages_out += 1
        stats.bytes_out += len(prepared.payload)
        if self._paused_bytes is None or self._queued(len(prepared.payloadHybi)):
            self.sendPreparedMessage(prepared)

    def close(self, code, reason):
        """Start the closing handshake with C{code} and C{reason}."""
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            # sendClose() refuses the RFC codes a server may send (1001
            # going away, 1011 server error); the engine has checked the code.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None,
                                isReply=False)
        elif self.state == WebSocketServerProtocol.STATE_CONNECTING:
            self.dropConnection(abort=True)


class SCServerFactory(WebSocketServerFactory):
    """
    The autobahn factory of an L{scserver.SCServer}.

    @ivar server: the L{scserver.SCServer}.
    @ivar any_path: when True, accept any request path (used when the
        factory sits behind a C{twisted.web} resource, which routes by path).
    @ivar max_handshake_size: the bytes a connection may receive before its
        upgrade completes (the C{max_handshake_size} option), or C{None}.
    @ivar http_paths: the plain HTTP endpoints (see L{http_paths}).
    """

    protocol = SCServerProtocol

    def __init__(self, server, reactor):
        WebSocketServerFactory.__init__(self, reactor=reactor)
        self.server = server
        self.any_path = False
        options = server.options
        self.max_handshake_size = handshake_limit(options["max_handshake_size"])
        self.http_paths = http_paths(options)
        protocol_options = dict(
            maxFramePayloadSize=options["max_payload"],
            maxMessagePayloadSize=options["max_payload"],
            autoPingInterval=0,
            openHandshakeTimeout=max(options["handshake_timeout"], 5),
            # autobahn's timers truncate "now + timeout" to whole seconds,
            # so a timeout of N fires after N-1 to N seconds; then it resets
            # the connection, which can lose the #disconnect and the close
            # frame.  Give the client 4-5 s to answer (ws in v14: 30 s).
            closeHandshakeTimeout=5,
            webStatus=False,
            # Close protocol violations with a close frame (1007, 1009, ...)
            # rather than dropping the TCP connection.
            failByDrop=False,
        )
        if options["per_message_deflate"]:
            from autobahn.websocket.compress import (
                PerMessageDeflateOffer,
                PerMessageDeflateOfferAccept,
            )

            def accept(offers):
                for offer in offers:
                    if isinstance(offer, PerMessageDeflateOffer):
                        return PerMessageDeflateOfferAccept(offer)
                return None

            protocol_options["perMessageCompressionAccept"] = accept
        self.setProtocolOptions(**protocol_options)


@implementer(IEngineOutput)
class SCClientProtocol(WebSocketClientProtocol):
    """
    The autobahn protocol of one connection attempt of an
    L{scserver.client.SCClientSocket}: it feeds the client socket every
    message, and is the output of the connection's engine (an
    L{scserver._engine.IEngineOutput}).
    """

    _log = Logger()
    _sc_drop_call = None
    _sc_closed = False
    _sc_waiters = None
    def onOpen(self):
        self.factory.client.connection_opened(self.factory, self)

    def onMessage(self, payload, isBinary):
        try:
            self.factory.client.receive(self, payload if isBinary else payload.decode("utf-8"))
        except Exception:
            self._log.failure("Error while handling a message from {peer}", peer=self.peer)

    def onCloseFrame(self, code, reasonRaw):
        result = WebSocketClientProtocol.onCloseFrame(self, code, reasonRaw)
        self._sc_arm_drop()
        return result

    def onClose(self, wasClean, code, reason):
        if self._sc_drop_call is not None:
            if self._sc_drop_call.active():
                self._sc_drop_call.cancel()
            self._sc_drop_call = None
        if code is None:
            code = 1005 if wasClean else 1006
        self._sc_closed = True
        self.factory.client.connection_closed(self.factory, self, code, reason or None)
        waiters, self._sc_waiters = self._sc_waiters, None
        for d in waiters or ():
            d.callback(None)

    def when_closed(self):
        """Return a Deferred that fires once this connection is closed."""
        if self._sc_closed:
            return succeed(None)
        if self._sc_waiters is None:
            self._sc_waiters = []
        d = Deferred()
        self._sc_waiters.append(d)
        return d

    def _sc_arm_drop(self):
        if self._sc_drop_call is None and self.state != self.STATE_CLOSED:
            self._sc_drop_call = self.factory.reactor.callLater(
                _CLOSE_TIMEOUT, self._sc_drop)

    def _sc_drop(self):
        self._sc_drop_call = None
        self.dropConnection(abort=True)

    def write(self, payload):
        """Send C{payload}: C{str} as a text frame, C{bytes} as a binary one."""
        if self.state != self.STATE_OPEN:
            return
        if isinstance(payload, str):
            self.sendMessage(payload.encode("utf-8"), False)
        else:
            self.sendMessage(payload, True)

    def close(self, code, reason):
        """Start the closing handshake (or drop a connection not yet open)."""
        if self.state == self.STATE_OPEN:
            self.sendClose(code, reason or None)
            self._sc_arm_drop()
        elif self.state != self.STATE_CLOSED and self.state != self.STATE_CLOSING:
            self.dropConnection(abort=True)


class SCClientFactory(WebSocketClientFactory):
    """The autobahn factory of one connection attempt of an L{scserver.client.SCClientSocket}."""

    protocol = SCClientProtocol
    noisy = False

    def __init__(self, client, url, reactor, headers=None, per_message_deflate=False):
        WebSocketClientFactory.__init__(self, url=url, reactor=reactor, headers=headers)
        self.client = client
        self.connector = None
        # autobahn's own timers run on txaio's global loop; ours use the
        # reactor we were given (see SCClientProtocol._sc_arm_drop).
        options = dict(
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            serverConnectionDropTimeout=0,
            echoCloseCodeReason=True,
        )
        if per_message_deflate:
            from autobahn.websocket.compress import (
                PerMessageDeflateOffer,
                PerMessageDeflateResponse,
                PerMessageDeflateResponseAccept,
            )

            def accept(response):
                if isinstance(response, PerMessageDeflateResponse):
                    return PerMessageDeflateResponseAccept(response)

            options.update(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=accept,
            )
        self.setProtocolOptions(**options)

    def cancel(self):
        """Abandon this attempt: stop dialing or drop the connection."""
        if self.connector is not None:
            self.connector.disconnect()

    def clientConnectionFailed(self, connector, reason):
        self.client.connection_failed(self, reason)

    def clientConnectionLost(self, connector, reason):
        pass
