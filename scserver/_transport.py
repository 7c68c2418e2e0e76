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

The plain data frames of an open connection without permessage-deflate take
a fast lane: whole, final, masked text and binary frames are read (unmasked,
their UTF-8 checked) by the protocol itself, and the server's messages are
framed and written directly (a server frame is a header and the payload);
everything else (control frames, fragments, frames not whole yet, protocol
violations, compression) goes through autobahn as before.  The wire bytes
are the same either way.

Over plain TCP (the reactor's own TCP or UNIX connection: not TLS, not
behind C{twisted.web}, whose HTTP channel keeps the transport) those frames
are also written through: rather than buffer them in Twisted's transport
for a later reactor turn (a C{doWrite} and two C{epoll_ctl} calls per
connection written to), they are sent on the socket at once when the
transport has nothing buffered and is not closing.  What the kernel does
not take (the rest of a partial send, all of it when the socket would
block or the send failed) goes to C{transport.write}, behind which every
later frame waits until Twisted has sent it: bytes are never lost nor
reordered, a send error is Twisted's to find (the connection is then lost
as always), and C{max_outbound_buffer} still counts what waits in Twisted's
buffer.  While a connection of the server reads, the frames written (its
replies, deliveries to other connections) are gathered per connection and
sent at the end of the read, one send per connection (at most 64 KiB
gathered per connection, and before anything autobahn writes to it): a
burst of messages to one connection is not one system call each.

L{SCClientProtocol} does the same for an L{scserver.client.SCClientSocket}:
it tells the client socket when the WebSocket opened or closed and feeds it
every message (C{connection_opened}, C{receive}, C{connection_closed}), and
is the output of the engine the client socket made for the connection.
"""

import fnmatch
import ipaddress
import struct
from urllib.parse import urlsplit

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from autobahn.websocket.xormasker import create_xor_masker  # type: ignore[attr-defined]
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ._logging import observer as log_observer
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
    "client_address",
    "handshake_limit",
    "http_paths",
    "RETRY_AFTER",
]

_CLOSE_TIMEOUT = 2.0
"""Seconds a closing client WebSocket may take before its TCP connection is dropped."""

_CLOSING_BACKLOG = 65536
"""
Bytes a peer may have sent, unread, once the server started closing; past
them the connection is ended without waiting for the peer's close frame.
"""

RETRY_AFTER = 5
"""
The C{Retry-After} seconds of an upgrade refused with 503 (the server is
at C{max_connections}) or 429 (C{max_connections_per_ip}).
"""

_END_OF_HEAD = b"\r\n\r\n"
"""What ends an HTTP request head."""

_TEXT_FRAME = 0x81
"""The first byte of a final, uncompressed text frame (FIN, opcode 1)."""

_BINARY_FRAME = 0x82
"""The first byte of a final, uncompressed binary frame (FIN, opcode 2)."""

_FAST_FRAME_LIMIT = 65535
"""
The largest payload of an inbound frame L{SCServerProtocol} reads itself
(the 7- and 16-bit length forms); a larger one goes through autobahn, which
streams it.
"""

_INT_UNMASK_LIMIT = 1024
"""Up to this many bytes, a payload is unmasked as one big integer (faster
than setting up autobahn's masker); beyond, with autobahn's masker."""

_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def unmask(payload, mask):
    """
    Unmask a client frame's payload (RFC 6455, 5.3).

    @param payload: the masked payload (C{bytes}).
    @param mask: the frame's 4-byte masking key.
    @return: the payload, unmasked (C{bytes}).
    """
    size = len(payload)
    if size > _INT_UNMASK_LIMIT:
        return create_xor_masker(mask, size).process(payload)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


def server_frame(first, payload):
    """
    Frame a server-to-client message (never masked) as autobahn's
    C{sendMessage} writes it unfragmented and uncompressed: the header,
    then C{payload}.

    @param first: the first byte: C{0x81} (text) or C{0x82} (binary).
    @param payload: the message (C{bytes}).
    @return: the frame (C{bytes}).
    """
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _pack_short(first, 126, size) + payload
    return _pack_long(first, 127, size) + payload


_COALESCE_LIMIT = 65536
"""
Bytes of frames gathered for one connection while a connection reads (the
replies to what it read, deliveries) past which they are sent without
waiting for the end of the read.
"""

_TWISTED_TEMP_LEN = "_tempDataLen"
"""
The attribute of Twisted's C{FileDescriptor} that counts the bytes written
since its last C{doWrite} (besides C{dataBuffer}, those not sent yet); read
with C{getattr}, a default of 1 disables write-through should it change.
"""


def _writes_through(transport):
    """
    Whether frames may be sent on C{transport}'s socket directly when its
    buffer is empty (see L{SCServerProtocol}): only a plain TCP (or UNIX)
    connection of the reactor's own, with no TLS and no producer but the
    protocol's L{_Backpressure} (behind C{twisted.web}, the HTTP channel is
    the producer: never there).

    @param transport: the protocol's transport.
    @return: C{True} or C{False}.
    """
    producer = getattr(transport, "producer", None)
    return (isinstance(transport, tcp.Server) and not getattr(transport, "TLS", True)
            and (producer is None or isinstance(producer, _Backpressure))
            and hasattr(transport, _TWISTED_TEMP_LEN))


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
    The plain HTTP endpoints of the C{health_path}, C{metrics_path} and
    C{inspect_path} options.

    @return: a dict of path (bytes) to C{"health"}, C{"metrics"} or
        C{"inspect"} (the paths of the inspection page); an empty or
        C{None} option has no entry.
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
    if options.get("inspect_path"):
        from ._inspect import page_paths
        for path in page_paths(options["inspect_path"]):
            key = path.encode("utf-8")
            if path == options["path"] or key in paths:
                raise InvalidOptionsError(
                    "inspect_path {!r} is already the path of another endpoint".format(path))
            paths[key] = "inspect"
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


MAX_FORWARDED_HOPS = 32
"""The most C{X-Forwarded-For} entries read, from the right."""


def client_address(peer, forwarded_for, trusted):
    """
    The client's address: the peer's, or, when the peer is a trusted proxy,
    the rightmost address of C{X-Forwarded-For} that is not a trusted proxy
    (each trusted hop vouches for the one before it; a hop that is not an
    IP address ends the walk).

    @param peer: the TCP peer's address (a string), or C{None}.
    @param forwarded_for: the C{X-Forwarded-For} header, or C{None}.
    @param trusted: the C{trusted_proxies} option: networks, or C{None}.
    @return: the address, as a string, or C{None} when C{peer} is.
    """
    if not trusted or not forwarded_for or peer is None:
        return peer

    def is_trusted(address):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    address = peer
    hops = forwarded_for.split(",")[-MAX_FORWARDED_HOPS:]
    for hop in reversed(hops):
        if not is_trusted(address):
            break
        try:
            address = str(ipaddress.ip_address(hop.strip()))
        except ValueError:
            break
    return address


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


class _SendQueue(list):
    """
    autobahn's queue of the sends it spreads over reactor turns (chopped or
    synchronous sends, which scserver does not make), as a list: an empty
    C{deque} takes 600 bytes a connection, an empty list 56.
    """

    __slots__ = ()

    def popleft(self):
        """Take the first send (as C{deque.popleft})."""
        return self.pop(0)


class _TimerCall:
    """
    One call of a L{_ReactorTimer}: a C{DelayedCall} whose C{cancel()} may
    be called after the call ran or was cancelled, as autobahn may (txaio's
    batched calls allow it).
    """

    __slots__ = ("call",)

    def __init__(self, call):
        self.call = call

    def cancel(self):
        """Cancel the call if it is still pending."""
        call = self.call
        if call.active():
            call.cancel()


class _ReactorTimer:
    """
    The timer an L{SCServerFactory} gives autobahn (its factory's
    C{_batched_timer}) for the per-connection timers autobahn arms: the
    opening and closing handshake timeouts (and auto-ping, when enabled).

    autobahn's own is txaio's batched timer, which has two faults for a
    server: it runs on txaio's global reactor, not the server's, and it
    rounds every deadline I{down} to a whole second (C{int(now + delay)}),
    so a timeout of N seconds fires after N-1 to N; and cancelling a call
    removes it from a list of all the calls due in the same second, which
    costs time in proportion to the connections made in that second.
    Here every call is a plain C{callLater} on the server's reactor: to the
    exact time, O(log n), and testable with a C{Clock}.

    @ivar clock: the reactor the calls are scheduled on (the attribute
        L{scserver.testing}'s memory network looks at).
    """

    __slots__ = ("clock",)

    def __init__(self, clock):
        self.clock = clock

    def call_later(self, delay, func, *args, **kwargs):
        """
        Call C{func(*args, **kwargs)} in C{delay} seconds.

        @return: an object with a C{cancel()} method.
        """
        return _TimerCall(self.clock.callLater(delay, func, *args, **kwargs))


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

    _log = Logger(observer=log_observer)
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
    # The fast lane (see _read_frames and write): on once the WebSocket is
    # open without permessage-deflate; the largest inbound payload it reads,
    # the largest outbound one it frames itself; set while reading.
    _fast = False
    _closing_received = 0
    _fast_max = 0
    _direct_max = 0
    _reading = False
    # Write-through (see _send): None until the first frame decides it;
    # the frames gathered while reading, and their size.
    _through = None
    _pending = None
    _pending_size = 0

    def connectionMade(self):
        """Set up the Deferred that fires when the connection is gone."""
        self.closed = Deferred()
        self._stats = self.factory.server.stats
        # The request head is gathered here, not in autobahn's buffer (see
        # _dataReceived).
        self._head = bytearray()
        self._preopen_bytes = 0
        WebSocketServerProtocol.connectionMade(self)
        self.send_queue = _SendQueue()

    def dataReceived(self, data):
        """
        Bytes from the transport: as autobahn, without its debug line per
        read (built even when nothing logs it).
        """
        self._dataReceived(data)

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
        address = client_address(getattr(self.transport.getPeer(), "host", None),
                                 request.headers.get("x-forwarded-for"),
                                 server.options["trusted_proxies"])
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
        if what == "inspect":
            return self._answer_inspect(parts, data[line_end + 2:end].split(b"\r\n"))
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

    def _answer_inspect(self, parts, header_lines):
        """
        Answer a request for the inspection page (the C{inspect_path}
        option): see L{scserver._inspect.Inspector.answer}.

        @return: True (the request was answered).
        """
        inspector = self.factory.server.inspector
        answer = inspector.answer(parts[0], parts[1], header_lines)
        head = "HTTP/1.1 {} {}\r\n".format(answer.code, answer.reason)
        for name, value in answer.headers:
            head += "{}: {}\r\n".format(name, value)
        head += "Content-Length: {}\r\nConnection: close\r\n\r\n".format(len(answer.body))
        self.data = b""
        self.wasNotCleanReason = "HTTP inspection request answered"
        self.sendData(head.encode("latin-1") + (answer.body if parts[0] == b"GET" else b""))
        self.dropConnection(abort=False)
        return True

    def failHandshake(self, reason, code=400, responseHeaders=None):
        """
        Answer a refused upgrade with C{code} and C{reason} as a text body
        (with C{Retry-After} when the server is full or the address has too
        many connections), and count it.
        """
        self.wasNotCleanReason = reason
        server = self.factory.server
        server.stats.count(server.stats.refused, str(code))
        if code in (429, 503):
            responseHeaders = list(responseHeaders or ()) + [("Retry-After", str(RETRY_AFTER))]
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
        # Data frames take the fast lane unless autobahn has work to do on
        # them: compression, fragmentation, logging, timing.
        self._fast = (self._perMessageCompress is None and not self.autoFragmentSize
                      and not self.logFrames and not self.logOctets and not self.trackedTimings)
        limits = [size for size in (self.maxFramePayloadSize, self.maxMessagePayloadSize)
                  if size > 0]
        self._fast_max = min(limits + [_FAST_FRAME_LIMIT])
        self._direct_max = self.maxMessagePayloadSize if self.maxMessagePayloadSize > 0 \
            else float("inf")
        # The request and response heads, kept by autobahn for the life of
        # the connection (the request is in sc_request).
        self.http_request_data = self.http_response_data = None
        self.http_status_line = self.http_headers = None
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
        if self._reading:
            # Called back from a message being handled: the bytes wait in
            # self.data for the loop under way.
            return
        limit = self._turn_limit
        if self.state == WebSocketServerProtocol.STATE_CLOSING and self.closedByMe:
            # The server sent its close frame: what the peer sends before
            # its close reply is discarded (RFC 6455, 5.5.1), so its data
            # frames are skipped unread rather than unmasked and parsed.
            self._closing_received += self._skip_data_frames()
            if limit is not None and \
                    self._closing_received + len(self.data) > _CLOSING_BACKLOG:
                # A flooder cut off, say, that keeps sending: its close
                # reply is behind all that.  Stop reading, let the close
                # frame go out, and end the connection.
                self.data = b""
                self.transport.pauseProducing()
                self.transport.loseConnection()
                return
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            WebSocketServerProtocol.consumeData(self)
            return
        if self._turn_call is not None:
            return  # yielding: the bytes wait in self.data
        # A read (a reactor turn: the reactor reads a connection once per
        # turn) starts a new count.
        self._turn_messages = 0
        self._reading = True
        # What the messages read write (replies, deliveries to other
        # connections) is gathered and sent at the end of the read, one
        # send per connection (see _send).
        factory = self.factory
        batch = factory._sc_written is None
        if batch:
            factory._sc_written = []
        try:
            self._read_messages(limit)
        finally:
            self._reading = False
            if batch:
                written, factory._sc_written = factory._sc_written, None
                for protocol in written:
                    protocol._flush()
        if limit is not None and self._turn_messages >= limit \
                and self.state == WebSocketServerProtocol.STATE_OPEN:
            self.transport.pauseProducing()
            self._turn_call = self.factory.reactor.callLater(0, self._next_turn)
        elif self.state == WebSocketServerProtocol.STATE_CLOSING:
            self.consumeData()  # closed meanwhile: bounded as above

    def _skip_data_frames(self):
        """
        Drop the whole data frames (text, binary, continuation; masked,
        without extension bits) at the head of the buffer, without
        unmasking them; stop at anything else (a control frame, a frame not
        whole yet, a violation), which autobahn then handles.

        @return: the number of bytes dropped.
        """
        if self.current_frame is not None:
            return 0
        data = self.data
        size = len(data)
        offset = 0
        while size - offset >= 2:
            first = data[offset]
            second = data[offset + 1]
            if first & 0x70 or (first & 0x0F) > 2 or second < 0x80:
                break
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = (data[offset + 2] << 8) | data[offset + 3]
                header = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(data[offset + 2:offset + 10], "big")
                header = 10
            stop = offset + header + 4 + length
            if stop > size:
                break
            offset = stop
        if offset:
            self.data = data[offset:]
        return offset

    def _read_messages(self, limit):
        """
        Handle the buffered frames while the connection is open and the
        turn's C{limit} (or C{None}) allows: the plain data frames in the
        fast lane (L{_read_frames}), anything else with autobahn, a step at
        a time.
        """
        open_ = WebSocketServerProtocol.STATE_OPEN
        while self.state == open_ and (limit is None or self._turn_messages < limit):
            if self._fast and self.current_frame is None and not self.inside_message:
                self._read_frames(limit)
                if not self.data or self.state != open_ or (
                        limit is not None and self._turn_messages >= limit):
                    return
            # Not whole yet, or not a plain data frame: autobahn's turn.
            if not self.processData():
                return

    def _read_frames(self, limit):
        """
        The fast lane of inbound messages: handle the frames at the head of
        the buffer that need nothing of autobahn's machinery, without it.

        Those are whole, final, masked, uncompressed text and binary frames
        of at most C{_fast_max} bytes (as autobahn, with the UTF-8 of text
        checked: Python's strict decoder refuses exactly what RFC 3629
        does).  At anything else (a control frame, a fragment, a frame not
        whole yet, a protocol violation, invalid UTF-8) it stops and leaves
        the frame to autobahn, which handles it, or fails the connection,
        as it always does.  It stops too at the turn's C{limit} and when the
        connection is no longer open.  The buffer is cut once, at the end.
        """
        data = self.data
        size = len(data)
        offset = 0
        largest = self._fast_max
        socket = self.sc_socket
        open_ = WebSocketServerProtocol.STATE_OPEN
        try:
            while size - offset >= 6:
                first = data[offset]
                second = data[offset + 1]
                if (first != _TEXT_FRAME and first != _BINARY_FRAME) or second < 0x80:
                    return  # not final, compressed, a control frame, unmasked
                length = second & 0x7F
                if length < 126:
                    start = offset + 6
                elif length == 126 and size - offset >= 8:
                    length = (data[offset + 2] << 8) | data[offset + 3]
                    if length < 126:
                        return  # not the minimal encoding: autobahn fails it
                    start = offset + 8
                else:
                    return
                stop = start + length
                if stop > size or length > largest:
                    return
                payload = unmask(data[start:stop], data[start - 4:start])
                if first == _TEXT_FRAME:
                    try:
                        payload = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        return  # autobahn closes with 1007
                offset = stop
                self._turn_messages += 1
                if socket is not None:
                    socket.receive(payload)
                if self.state != open_ or (limit is not None and self._turn_messages >= limit):
                    return
        finally:
            if offset:
                self.data = self.data[offset:]

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
        size = len(payload)
        stats = self._stats
        stats.messages_out += 1
        stats.bytes_out += size
        if self._paused_bytes is not None and not self._queued(size):
            return
        if self._fast and size <= self._direct_max and not self.send_queue:
            # What sendMessage would write, without its machinery: a
            # server frame is its header and the payload.
            self._send(server_frame(_BINARY_FRAME if binary else _TEXT_FRAME, payload))
        else:
            self.sendMessage(payload, binary)

    def write_prepared(self, prepared):
        """Send a message prepared once for many connections."""
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        stats = self._stats
        stats.messages_out += 1
        stats.bytes_out += len(prepared.payload)
        if self._paused_bytes is not None and not self._queued(len(prepared.payloadHybi)):
            return
        if self._fast and not self.send_queue:
            self._send(prepared.payloadHybi)
        else:
            self.sendPreparedMessage(prepared)

    def _send(self, frame):
        """
        Write a fast-lane C{frame}: while a connection of the factory reads
        (this one or another), gather it with the others written to this
        connection meanwhile (sent as one at the end of the read, or once
        they reach C{_COALESCE_LIMIT} bytes); otherwise send it now
        (L{_send_now}).  On a transport that does not write through (TLS,
        C{twisted.web}, another reactor's), C{transport.write} it.
        """
        through = self._through
        if through is None:
            through = self._through = _writes_through(self.transport)
        if not through:
            self.transport.write(frame)
            return
        written = self.factory._sc_written
        if written is not None:
            pending = self._pending
            if pending is None:
                self._pending = [frame]
                self._pending_size = len(frame)
                written.append(self)
            else:
                pending.append(frame)
                self._pending_size += len(frame)
                if self._pending_size >= _COALESCE_LIMIT:
                    self._flush()
        else:
            self._send_now(frame)

    def _flush(self):
        """Send the frames gathered while reading, joined, in order."""
        pending, self._pending = self._pending, None
        if pending:
            self._send_now(pending[0] if len(pending) == 1 else b"".join(pending))

    def _send_now(self, data):
        """
        Write-through: send C{data} on the socket at once when the
        transport has nothing buffered and is not closing; hand Twisted
        what the kernel did not take (all of it when the socket would
        block or failed: Twisted then sends it, or finds the error and
        loses the connection, as always).
        """
        transport = self.transport
        if (transport.dataBuffer or getattr(transport, _TWISTED_TEMP_LEN, 1)
                or transport.disconnecting or not transport.connected
                or self.state == WebSocketServerProtocol.STATE_CLOSED):
            # Behind other bytes, closing or dropped (aborted: Twisted
            # discards it): as before write-through.
            transport.write(data)
            return
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent < len(data):
            transport.write(data[sent:] if sent else data)

    def sendData(self, data, sync=False, chopsize=None):
        """
        Write what autobahn frames (control frames, the handshake, messages
        off the fast lane) after the fast-lane frames gathered so far.
        """
        if self._pending is not None:
            self._flush()
        WebSocketServerProtocol.sendData(self, data, sync, chopsize)

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
    # The connections with frames gathered while one of the factory's
    # connections reads, or None outside reads (see SCServerProtocol._send).
    _sc_written = None

    def __init__(self, server, reactor):
        WebSocketServerFactory.__init__(self, reactor=reactor)
        # autobahn's per-connection timers on the server's reactor, to the
        # exact time (see _ReactorTimer).
        self._batched_timer = _ReactorTimer(reactor)
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
            # Past it the connection is reset, which can lose the
            # #disconnect and the close frame: give the client 5 s to
            # answer (ws in v14: 30 s).
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

    def resetProtocolOptions(self):
        """Reset autobahn's protocol options to its defaults (see L{setProtocolOptions})."""
        WebSocketServerFactory.resetProtocolOptions(self)
        self._carry_options()

    def setProtocolOptions(self, **options):
        """
        Set autobahn's protocol options, as C{WebSocketServerFactory} does,
        for the connections made from now on (see L{_carry_options}).
        """
        WebSocketServerFactory.setProtocolOptions(self, **options)
        self._carry_options()

    def _carry_options(self):
        """
        Make this factory's connections of a protocol class that holds its
        options.  autobahn copies every option into each new connection,
        and formats all of them for a debug line whether or not anything
        logs it: a third of the time of a handshake, and 40 entries in
        every connection's C{__dict__}.  With the options on the class,
        there is nothing to copy.
        """
        base = type(self).protocol
        attributes = {}
        for name in base.CONFIG_ATTRS:
            value = getattr(self, name)
            # A function (perMessageCompressionAccept) must not become a method.
            attributes[name] = staticmethod(value) if callable(value) else value
        attributes["CONFIG_ATTRS"] = ()
        self.protocol = type(base.__name__, (base,), attributes)


@implementer(IEngineOutput)
class SCClientProtocol(WebSocketClientProtocol):
    """
    The autobahn protocol of one connection attempt of an
    L{scserver.client.SCClientSocket}: it feeds the client socket every
    message, and is the output of the connection's engine (an
    L{scserver._engine.IEngineOutput}).
    """

    _log = Logger(observer=log_observer)
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
