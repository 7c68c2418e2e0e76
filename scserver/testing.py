"""
Test the SocketCluster handlers of an application without a network.

Modelled on treq's C{StubTreq}: a L{FakeConnection} attaches a real
L{scserver.SCServerSocket} of a real L{scserver.SCServer} to an in-memory
client.  What the test sends goes through the server's codec and protocol
engine exactly as a WebSocket message would; what the server sends is
recorded, raw and decoded.  Time is a C{twisted.internet.task.Clock}, so
ping intervals, ack timeouts and batching are driven by C{advance()}::

    from twisted.internet.task import Clock
    from scserver import SCServer
    from scserver.testing import connect

    clock = Clock()
    server = SCServer(reactor=clock, auth_key="test-secret")
    myapp.setup(server)

    conn = connect(server)
    status = conn.handshake()
    d = conn.invoke("login", {"username": "alice"})
    self.assertEqual(self.successResultOf(d), "logged-in")
    self.assertEqual(conn.sent_events("#setAuthToken")[0]["data"]["token"][:3], "eyJ")
    clock.advance(8)            # the server's first ping
    conn.disconnect()
    self.assertEqual(conn.closed, (1000, ""))

Only the WebSocket layer is missing: there is no HTTP upgrade (the
C{handshakeWS} middleware does not run; build the request with the
C{path}, C{headers} and C{origin} arguments instead), no framing, no
C{max_payload} check and no UTF-8 validation.  An unexpected exception while
the server handles a message is logged and closes the socket with 1011, as
on a real connection (trial reports the logged error).

With the WebSocket layer, a L{MemoryNetwork} connects real clients (a
L{scserver.client.SCClientSocket}, or any autobahn client factory) to the
server over in-memory TCP: the HTTP upgrade, the C{handshakeWS}
middleware, autobahn's framing and the codecs all run as in production,
pumped synchronously, with every timer on the server's clock.  A
L{RawServer} plays a server the test drives, to test a client.

This module never imports the global reactor.
"""

import itertools
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketClientFactory
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import error as net_error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConnector,
    IConsumer,
    IListeningPort,
    IPushProducer,
    IReactorTime,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from zope.interface import implementer

from ._engine import PING_V1, PING_V2, PONG_V1
from ._transport import UpgradeRequest
from .socket import IServerSocketOutput
from .errors import BadConnectionError, as_exception, dehydrate_error, hydrate_error

__all__ = [
    "FakeConnection",
    "MemoryConnection",
    "MemoryNetwork",
    "NotAnswered",
    "RawServer",
    "RawServerProtocol",
    "RecordingOutput",
    "connect",
    "make_server",
]

_MISSING = object()


class NotAnswered(AssertionError):
    """
    The server did not answer a request synchronously (for instance the
    handshake waits for asynchronous middleware).  Use
    L{FakeConnection.invoke}, which returns a Deferred, for such requests.
    """


def make_server(clock=None, **options):
    """
    Create an L{scserver.SCServer} driven by a clock, for tests.

    @param clock: a C{twisted.internet.task.Clock} (or any
        C{IReactorTime}); a new C{Clock} when C{None}.  It becomes the
        server's reactor, so the server cannot listen on real ports: use
        it with L{FakeConnection}s, or give it to a L{MemoryNetwork}.
    @param options: the server options; C{auth_key} defaults to a fixed
        test secret (so no random key is generated with a warning).
    @return: the server; its clock is C{server.reactor}.
    """
    from .server import SCServer

    if clock is None:
        clock = Clock()
    options.setdefault("auth_key", "scserver.testing-secret-key")
    return SCServer(reactor=clock, **options)


@implementer(IServerSocketOutput)
class RecordingOutput:
    """
    The output of a fake connection: what a L{scserver.SCServerSocket}
    writes to it is recorded instead of going to a WebSocket.

    It provides what the socket expects from its transport adapter:
    C{write(payload)}, C{write_prepared(prepared)} and
    C{close(code, reason)}.

    @ivar payloads: every payload written while open, in order: C{str} for
        a text frame, C{bytes} for a binary frame.
    @ivar close_args: C{None}, or C{(code, reason)} once the server closed
        the connection.
    @ivar late_payloads: payloads written after the close (a real transport
        drops them; they are kept here for diagnosis).
    """

    def __init__(self, on_payload=None):
        """
        @param on_payload: called with each payload recorded, or C{None}.
        """
        self.payloads = []
        self.late_payloads = []
        self.close_args = None
        self._on_payload = on_payload

    def write(self, payload):
        """Record C{payload} (C{str}: a text frame; C{bytes}: binary)."""
        if type(payload) not in (str, bytes):
            payload = bytes(payload)
        if self.close_args is not None:
            self.late_payloads.append(payload)
            return
        self.payloads.append(payload)
        if self._on_payload is not None:
            self._on_payload(payload)

    def write_prepared(self, prepared):
        """
        Record a message prepared once for many connections.

        @param prepared: what L{scserver.exchange.Publication.frame} returns
            (autobahn's C{PreparedMessage}, with C{payload} bytes and a
            C{binary} flag), or a plain C{str}/C{bytes} payload.
        """
        if isinstance(prepared, (str, bytes)):
            self.write(prepared)
            return
        payload = bytes(prepared.payload)
        if not getattr(prepared, "binary", False):
            payload = payload.decode("utf-8")
        self.write(payload)

    def close(self, code, reason):
        """Record that the server closed the connection with C{code} and C{reason}."""
        if self.close_args is None:
            self.close_args = (code, reason)


class FakeConnection:
    """
    An in-memory client connection to a server.

    Creating it creates the L{scserver.SCServerSocket} (as a WebSocket that
    just opened would: the server's C{'handshake'} event fires, the socket
    is in C{server.pending_clients}, its handshake, ping and pong timers
    run on C{clock}).

    Everything the server sends is recorded in L{payloads} (raw) and
    L{sent} (decoded with the server's codec; the v2 ping C{''} is kept as
    C{''}).  Replies to the requests made with L{invoke} fire their
    Deferreds as they arrive.

    @ivar server: the L{scserver.SCServer}.
    @ivar clock: the clock of the socket.
    @ivar socket: the L{scserver.SCServerSocket}.
    @ivar request: the fake HTTP upgrade request
        (L{scserver._transport.UpgradeRequest}).
    @ivar output: the L{RecordingOutput} given to the socket.
    @ivar sent: the decoded packets the server sent, in order.
    @ivar payloads: the raw payloads the server sent, in order.
    """

    def __init__(self, server, clock=None, path=None, headers=None, origin=None,
                 remote_address="127.0.0.1", port=50000):
        """
        @param server: the L{scserver.SCServer}.
        @param clock: an C{IReactorTime}; C{server.reactor} by default.
        @param path: the request path with an optional query string; the
            server's C{path} option by default.
        @param headers: the request headers (a dict, lower-case names).
        @param origin: the C{Origin} header value, or C{None}.
        @param remote_address: the client's IP address.
        @param port: the client's port (for C{request.peer}).
        """
        self.server = server
        self.clock = clock if clock is not None else server.reactor
        if path is None:
            path = server.options["path"]
        headers = dict(headers or {})
        headers.setdefault("host", "localhost")
        if origin is not None:
            headers.setdefault("origin", origin)
        params = parse_qs(urlsplit(path).query, keep_blank_values=True)
        self.request = UpgradeRequest(
            path, headers, origin, "tcp:{}:{}".format(remote_address, port), params,
            remote_address)
        self.sent = []
        self._invokes = {}
        self._cid = 0
        self.output = RecordingOutput(self._record)
        self.socket = server.accept(self.output, self.request, clock=self.clock)
        self.socket.on("close", self._socket_closed)

    def __repr__(self):
        return "<FakeConnection {!r}>".format(self.socket)

    # -- what the server sent --------------------------------------------

    @property
    def payloads(self):
        """The raw payloads the server sent (C{str} text, C{bytes} binary)."""
        return self.output.payloads

    @property
    def codec(self):
        """
        The codec of this connection: the server's codec when the socket
        was created (a later C{set_codec_engine} does not change it).
        """
        return self.socket.codec

    @property
    def closed(self):
        """
        C{None} while open, or C{(code, reason)} of the close frame once
        the server closed the connection.
        """
        return self.output.close_args

    @property
    def state(self):
        """The socket's state: C{'connecting'}, C{'open'} or C{'closed'}."""
        return self.socket.state

    def _decode(self, payload):
        if payload == PING_V2:
            return payload
        try:
            return self.codec.decode(payload)
        except Exception:
            return payload

    def _record(self, payload):
        packet = self._decode(payload)
        self.sent.append(packet)
        for item in packet if type(packet) is list else (packet,):
            if type(item) is dict and "rid" in item and "event" not in item:
                self._answer(item)

    def _answer(self, reply):
        # This connection's own cids are integers (see next_cid).
        rid = reply["rid"]
        d = self._invokes.pop(rid, None) if type(rid) is int else None
        if d is None:
            return
        error = reply.get("error")
        if error is not None and error is not False:
            error = as_exception(hydrate_error(error))
            error.data = reply.get("data")
            d.errback(error)
        else:
            d.callback(reply.get("data"))

    def _socket_closed(self, code, reason):
        invokes, self._invokes = self._invokes, {}
        for cid, d in sorted(invokes.items(), key=lambda item: str(item[0])):
            d.errback(BadConnectionError(
                "Request {} was aborted due to a bad connection".format(cid),
                type="disconnect"))

    def pop_sent(self, raw=False):
        """
        Return what the server sent since the last call, and forget it.

        @param raw: return the raw payloads instead of the decoded packets.
        @return: a list.
        """
        sent, payloads = self.sent, list(self.output.payloads)
        self.sent = []
        del self.output.payloads[:]
        return payloads if raw else sent

    def sent_events(self, event=None):
        """
        Return the event packets the server sent (batches flattened), or
        only those named C{event}.

        @return: a list of dicts (C{event}, C{data}, C{cid}).
        """
        result = []
        for packet in self.sent:
            for item in packet if type(packet) is list else (packet,):
                if type(item) is dict and "event" in item and (
                        event is None or item["event"] == event):
                    result.append(item)
        return result

    def reply_to(self, cid):
        """
        Return the server's reply to the request C{cid}
        (C{{"rid": cid, ...}}), or C{None} when there is none yet.
        """
        for packet in self.sent:
            for item in packet if type(packet) is list else (packet,):
                if type(item) is dict and "event" not in item and item.get("rid", _MISSING) == cid \
                        and type(item.get("rid")) is type(cid):
                    return item
        return None

    # -- what the client sends -------------------------------------------

    def next_cid(self):
        """Return the next call id of this client (1, 2, ...)."""
        self._cid += 1
        return self._cid

    def send_raw(self, payload):
        """
        Deliver one WebSocket message to the server as it is.

        @param payload: C{str} for a text frame, C{bytes} for a binary one.
        """
        self.socket.receive(payload)

    def send(self, packet):
        """Encode C{packet} with the server's codec and deliver it."""
        self.send_raw(self.codec.encode(packet))

    def emit(self, event, data=_MISSING, cid=None):
        """
        Send the event C{event}.

        @param data: the data; left out of the packet when not given.
        @param cid: C{None} (no reply wanted), C{True} (use the next call id
            of this client), or the exact cid to send (any JSON value).
        @return: the cid sent, or C{None}.
        """
        if cid is True:
            cid = self.next_cid()
        packet = {"event": event}
        if data is not _MISSING:
            packet["data"] = data
        if cid is not None:
            packet["cid"] = cid
        self.send(packet)
        return cid

    def invoke(self, event, data=_MISSING):
        """
        Send C{event} with the next cid and wait for the reply.

        @return: a Deferred firing with the reply's data; it fails with the
            hydrated error of an error reply (its C{data} attribute holds
            the reply's data), or L{scserver.errors.BadConnectionError} when
            the connection closes first.  It never times out by itself.
        """
        cid = self.next_cid()
        d = self._invokes[cid] = Deferred()
        self.emit(event, data, cid)
        return d

    def handshake(self, auth_token=None):
        """
        Send C{#handshake} (with the next cid) and return the status the
        server answered.

        @param auth_token: the signed auth token to present, or C{None}.
        @return: the status dict (C{id}, C{pingTimeout}, C{isAuthenticated}
            and maybe C{authError}).
        @raise NotAnswered: the server did not answer at once.
        @raise Exception: the hydrated error of a rejection (its C{data}
            attribute holds the reply's data, C{{"code": ...}}).
        """
        d = self.invoke("#handshake", {"authToken": auth_token})
        result = []
        d.addBoth(result.append)
        if not result:
            self._invokes.pop(self._cid, None)
            raise NotAnswered("The server did not answer the handshake synchronously")
        outcome = result[0]
        if hasattr(outcome, "raiseException"):
            outcome.raiseException()
        return outcome

    def reply(self, rid, data=_MISSING, error=None):
        """
        Answer the server's request C{rid} (from C{socket.invoke} or
        C{socket.emit} with a callback).

        @param error: an exception (dehydrated as SocketCluster does) or any
            JSON value; left out when C{None}.
        """
        packet = {"rid": rid}
        if error is not None:
            packet["error"] = dehydrate_error(error)
        if data is not _MISSING:
            packet["data"] = data
        self.send(packet)

    def pong(self, version=1):
        """
        Answer a ping: C{'#2'} through the codec for protocol version 1, an
        empty text frame for version 2.
        """
        if version == 2:
            self.send_raw(PING_V2)
        else:
            self.send_raw(self.codec.encode(PONG_V1))

    def pings(self):
        """Return how many pings (C{'#1'} or C{''}) the server sent so far."""
        return sum(1 for packet in self.sent if packet == PING_V1 or packet == PING_V2)

    def subscribe(self, channel, data=_MISSING, wait_for_auth=False, batch=False):
        """
        Subscribe to C{channel} as the SocketCluster client does.

        @return: the Deferred of L{invoke} (fires with C{None} on success).
        """
        options = {"channel": channel}
        if wait_for_auth:
            options["waitForAuth"] = True
        if batch:
            options["batch"] = True
        if data is not _MISSING:
            options["data"] = data
        return self.invoke("#subscribe", options)

    def unsubscribe(self, channel):
        """Unsubscribe from C{channel} (the v14 client's bare-string form, no cid)."""
        self.emit("#unsubscribe", channel)

    def publish(self, channel, data=_MISSING):
        """
        Publish C{data} on C{channel}.

        @return: the Deferred of L{invoke} (fires with the ack data).
        """
        packet = {"channel": channel}
        if data is not _MISSING:
            packet["data"] = data
        return self.invoke("#publish", packet)

    def authenticate(self, signed_auth_token):
        """
        Send C{#authenticate} with a signed token.

        @return: the Deferred of L{invoke}.
        """
        return self.invoke("#authenticate", signed_auth_token)

    def deauthenticate(self):
        """Send C{#removeAuthToken}, as the client's C{deauthenticate()} does."""
        self.emit("#removeAuthToken")

    def disconnect(self, code=1000, reason=None):
        """
        Close as the v14 client does: a C{#disconnect} event with the code
        (and the reason), to which the server answers with its close frame.
        """
        data = {"code": code}
        if reason is not None:
            data["data"] = reason
        self.emit("#disconnect", data)
        if self.socket.state != self.socket.CLOSED:
            self.lose_connection(code, reason)

    def lose_connection(self, code=1006, reason=None):
        """
        The connection ends without the server closing it: the peer's close
        frame (C{code}, C{reason}) or, with the default 1006, a dropped TCP
        connection.
        """
        self.socket.connection_lost(code, reason)

    def advance(self, seconds):
        """Move the clock forward by C{seconds} (it must be a C{Clock})."""
        self.clock.advance(seconds)


def connect(server, clock=None, **kwargs):
    """
    Open a L{FakeConnection} to C{server}.

    @param clock: see L{FakeConnection}; C{server.reactor} by default.
    @param kwargs: the other arguments of L{FakeConnection} (C{path},
        C{headers}, C{origin}, C{remote_address}, C{port}).
    @return: the L{FakeConnection}.
    """
    return FakeConnection(server, clock=clock, **kwargs)


# -- the real stack in memory --------------------------------------------------
#
# A MemoryNetwork connects real clients (scserver.client, or any autobahn
# WebSocketClientFactory) to a real server (an SCServer's autobahn factory,
# or a RawServer) over in-memory TCP transports, pumped synchronously as
# twisted.test.iosim does.  Every timer runs on the server's clock.


_MAX_ROUNDS = 10000
"""Pumping rounds after which L{MemoryNetwork.flush} gives up (a livelock)."""


class _LenientCall:
    """
    What txaio's batched timer returns: an object with a C{cancel()} that
    may be called after the call ran or was cancelled.
    """

    __slots__ = ("call",)

    def __init__(self, call):
        self.call = call

    def cancel(self):
        if self.call.active():
            self.call.cancel()


class _ClockTimer:
    """
    txaio's C{IBatchedTimer} on a clock, for an autobahn factory's
    C{_batched_timer} (open and close handshake timeouts, auto-ping).

    Like txaio's own (C{txaio.make_batched_timer}, which always uses the
    global reactor), a call fires when the clock reaches the whole second
    C{int(now + delay)}: autobahn's timeouts of N seconds fire after N-1 to
    N seconds, in memory as in production.
    """

    def __init__(self, clock):
        self.clock = clock

    def call_later(self, delay, func, *args, **kwargs):
        now = self.clock.seconds()
        return _LenientCall(self.clock.callLater(
            max(0.0, int(now + delay) - now), func, *args, **kwargs))


@contextmanager
def _txaio_loop(clock):
    """
    Point txaio's loop at C{clock} while the network pumps: the few timers
    autobahn schedules with C{txaio.call_later} (a client waiting for the
    server to drop the TCP connection, chopped writes) land on the clock.
    """
    import txaio

    old = txaio.config.loop
    txaio.config.loop = clock
    try:
        yield
    finally:
        txaio.config.loop = old


def _use_clock(factory, clock):
    """
    Make the autobahn C{factory} schedule its timers on C{clock}, unless
    they are on it already (an L{scserver.SCServer}'s factory on the
    server's reactor, to the exact time).
    """
    if getattr(getattr(factory, "_batched_timer", None), "clock", None) is clock:
        return
    factory._batched_timer = _ClockTimer(clock)


def _follow_takeover(protocol, clock):
    """
    Put the timers of C{protocol}'s autobahn factory on C{clock} if they are
    not yet: a protocol that took a connection over (autobahn's
    C{WebSocketResource} in a twisted.web site) comes from a factory the
    network never saw listen.
    """
    factory = getattr(protocol, "factory", None)
    timer = getattr(factory, "_batched_timer", None)
    if timer is not None and getattr(timer, "clock", None) is not clock:
        _use_clock(factory, clock)


@implementer(ITCPTransport, IConsumer, IPushProducer)
class _MemoryTransport:
    """
    One end of an in-memory TCP connection.

    C{write} buffers; the network delivers the buffer to the other end's
    protocol when it pumps.  C{loseConnection} closes once the buffer is
    delivered (the peer sees a clean close); C{abortConnection} discards it
    (the peer sees a connection lost).  Like a TCP transport, an end that is
    closing reads nothing more, an end paused (C{pauseProducing()}) reads
    nothing until resumed, and a streaming producer registered on an end is
    paused while more than C{bufferSize} bytes it wrote wait for the other
    end to read them, resumed once they are read.
    """

    bufferSize = 65536
    disconnecting = False
    aborted = False
    lost = False
    paused = False
    receiving = False
    producer = None
    streaming = None
    _producer_paused = False

    def __init__(self, host, peer):
        self.protocol = None
        self.buffer = []
        self.host = host
        self.peer = peer
        self._buffered = 0

    def __repr__(self):
        return "<memory transport {}:{} to {}:{}>".format(
            self.host.host, self.host.port, self.peer.host, self.peer.port)

    def write(self, data):
        if not isinstance(data, bytes):
            raise TypeError("Data must be bytes, not {}".format(type(data).__name__))
        # As a TCP transport does, what is written after loseConnection()
        # still goes out before the connection closes.
        if self.lost or self.aborted or not data:
            return
        self.buffer.append(data)
        self._buffered += len(data)
        if self._buffered > self.bufferSize and self.streaming and not self._producer_paused:
            self._producer_paused = True
            self.producer.pauseProducing()

    def _take(self):
        """
        Empty the buffer: its bytes leave this end (the producer this paused
        resumes).

        @return: the bytes.
        """
        data = b"".join(self.buffer)
        del self.buffer[:]
        self._buffered = 0
        if self._producer_paused:
            self._producer_paused = False
            self.producer.resumeProducing()
        return data

    def writeSequence(self, data):
        self.write(b"".join(data))

    def loseConnection(self):
        self.disconnecting = True

    def abortConnection(self):
        if not self.lost:
            self.disconnecting = True
            self.aborted = True
            del self.buffer[:]
            self._buffered = 0

    def loseWriteConnection(self):
        self.loseConnection()

    def getPeer(self):
        return self.peer

    def getHost(self):
        return self.host

    def getTcpNoDelay(self):
        return True

    def setTcpNoDelay(self, enabled):
        pass

    def getTcpKeepAlive(self):
        return False

    def setTcpKeepAlive(self, enabled):
        pass

    def registerProducer(self, producer, streaming):
        if self.producer is not None:
            raise RuntimeError("Cannot register producer {!r}, because producer {!r} was "
                               "never unregistered.".format(producer, self.producer))
        if self.lost:
            producer.stopProducing()
            return
        self.producer = producer
        self.streaming = streaming
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None
        self._producer_paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        self.loseConnection()


class MemoryConnection:
    """
    One in-memory TCP connection of a L{MemoryNetwork}, between a client
    protocol and a server protocol.

    @ivar network: the L{MemoryNetwork}.
    @ivar connector: the C{IConnector} the client dialed with (what
        C{connectTCP} or C{connectSSL} of L{MemoryNetwork.reactor} returned).
    @ivar tls: C{True} when the connection runs TLS.
    @ivar client_transport: the client's end, an in-memory TCP transport
        (below the TLS layer).  Like Twisted's TCP transports, it stops
        reading while paused: C{client_transport.pauseProducing()} plays a
        client that stops reading, and the server's end then pauses its
        producer once more than C{bufferSize} (64 KiB) bytes wait,
        resuming it when the client reads them (C{resumeProducing()}).
    @ivar server_transport: the server's end, the same kind of transport.
    """

    def __init__(self, network, connector, client_outer, server_outer,
                 client_transport, server_transport, tls):
        self.network = network
        self.connector = connector
        self.tls = tls
        self.client_transport = client_transport
        self.server_transport = server_transport
        client_transport.protocol = client_outer
        server_transport.protocol = server_outer

    def _inner(self, transport):
        protocol = transport.protocol
        return getattr(protocol, "wrappedProtocol", protocol) if self.tls else protocol

    @property
    def client_protocol(self):
        """
        The client's protocol (for C{wss://}, the one inside the TLS layer):
        the autobahn C{WebSocketClientProtocol}.
        """
        return self._inner(self.client_transport)

    @property
    def server_protocol(self):
        """
        The server's protocol (for TLS, the one inside the TLS layer): an
        C{SCServerProtocol} of an L{scserver.SCServer}, a
        L{RawServerProtocol}, or whatever the listening factory built.  A
        protocol that takes the connection over, as autobahn's
        C{WebSocketResource} does in a twisted.web site, becomes the
        server's protocol.
        """
        return self._inner(self.server_transport)

    def __repr__(self):
        return "<MemoryConnection {!r} to {!r}{}>".format(
            self.client_protocol, self.server_protocol, " closed" if self.closed else "")

    @property
    def closed(self):
        """C{True} once both ends lost the connection."""
        return self.client_transport.lost and self.server_transport.lost

    def _start(self):
        self.server_transport.protocol.makeConnection(self.server_transport)
        self.client_transport.protocol.makeConnection(self.client_transport)

    def _deliver(self, source, target):
        """Move the bytes C{source} wrote to C{target}'s protocol."""
        if not source.buffer or target.receiving or target.lost:
            return False
        if target.disconnecting:
            # A closing TCP transport stops reading.
            source._take()
            return True
        if target.paused:
            return False
        data = source._take()
        target.receiving = True
        try:
            target.protocol.dataReceived(data)
        finally:
            target.receiving = False
        _follow_takeover(self._inner(target), self.network.clock)
        return True

    def _pump(self):
        """One round: move what each end wrote, then process a close."""
        if self.closed:
            return False
        self.network._io_clock.advance(0)
        for transport in (self.client_transport, self.server_transport):
            producer = transport.producer
            if producer is not None and not transport.streaming and not transport.buffer:
                producer.resumeProducing()
        moved = self._deliver(self.client_transport, self.server_transport)
        moved = self._deliver(self.server_transport, self.client_transport) or moved
        if moved:
            return True
        if self.client_transport.receiving or self.server_transport.receiving:
            # A protocol is in dataReceived (the network is pumped from a
            # handler): never call connectionLost under its feet.
            return False
        for transport in (self.client_transport, self.server_transport):
            if transport.disconnecting and not transport.buffer and not transport.lost:
                self._close(transport)
                return True
        return False

    def _close(self, initiator):
        peer = self.server_transport if initiator is self.client_transport else self.client_transport
        if initiator.aborted:
            reasons = (net_error.ConnectionAborted(), net_error.ConnectionLost())
        else:
            reasons = (net_error.ConnectionDone(), net_error.ConnectionDone())
        self._lose((initiator, peer), reasons)

    def _lose(self, transports, reasons):
        for transport in transports:
            transport.disconnecting = True
            transport.lost = True
            del transport.buffer[:]
        for transport, reason in zip(transports, reasons):
            transport.unregisterProducer()
            transport.protocol.connectionLost(Failure(reason))
            if transport is self.client_transport:
                self.connector._lost(Failure(reason))

    def flush(self):
        """
        Pump this connection until no bytes move (other connections and the
        clock wait).
        """
        with _txaio_loop(self.network.clock):
            for _ in range(_MAX_ROUNDS):
                if not self._pump():
                    return
        raise RuntimeError("{!r} still moves bytes after {} rounds".format(self, _MAX_ROUNDS))

    def drop(self):
        """
        The network fails: both ends lose the connection at once
        (C{ConnectionLost}, no closing handshake, bytes in flight are lost).
        """
        if self.closed:
            return
        with _txaio_loop(self.network.clock):
            self._lose((self.client_transport, self.server_transport),
                       (net_error.ConnectionLost(), net_error.ConnectionLost()))


@implementer(IConnector)
class _MemoryConnector:
    """
    The C{IConnector} of a dial on a L{MemoryNetwork}'s reactor: it behaves
    as a real connector (C{state}, C{disconnect()}, C{stopConnecting()},
    the factory's C{doStart}/C{startedConnecting}/C{clientConnectionFailed}/
    C{clientConnectionLost}/C{doStop}, a timeout after C{timeout} seconds).
    """

    def __init__(self, network, host, port, factory, timeout, tls):
        self.network = network
        self.host = host
        self.port = port
        self.factory = factory
        self.timeout = timeout
        self.tls = tls
        self.state = "disconnected"
        self.connection = None
        self._timeout_call = None

    def __repr__(self):
        return "<memory connector to {}:{} {}>".format(self.host, self.port, self.state)

    def connect(self):
        """Start dialing (again)."""
        if self.state != "disconnected":
            raise RuntimeError("Can't connect in the {} state".format(self.state))
        self.state = "connecting"
        self.connection = None
        self.factory.doStart()
        self.factory.startedConnecting(self)
        if self.state != "connecting":
            return
        if self.timeout:
            self._timeout_call = self.network.clock.callLater(
                self.timeout, self._failed, net_error.TimeoutError())
        self.network._dials.append(self)

    def stopConnecting(self):
        """Stop dialing: the factory's C{clientConnectionFailed} gets a C{UserError}."""
        if self.state != "connecting":
            raise net_error.NotConnectingError("we're not trying to connect")
        self._failed(net_error.UserError())

    def disconnect(self):
        """Stop dialing, or close the connection."""
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected":
            self.connection.client_transport.loseConnection()

    def getDestination(self):
        """The address dialed."""
        return IPv4Address("TCP", self.host, self.port)

    def _cancel_timeout(self):
        call, self._timeout_call = self._timeout_call, None
        if call is not None and call.active():
            call.cancel()

    def _connected(self, connection):
        self._cancel_timeout()
        if self in self.network._dials:
            self.network._dials.remove(self)
        self.state = "connected"
        self.connection = connection

    def _failed(self, reason):
        self._cancel_timeout()
        if self in self.network._dials:
            self.network._dials.remove(self)
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, Failure(reason))
        if self.state == "disconnected":
            self.factory.doStop()

    def _lost(self, reason):
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)
        if self.state == "disconnected":
            self.factory.doStop()


@implementer(IReactorTime)
class _NetworkReactor(MemoryReactor):
    """
    The reactor of a L{MemoryNetwork}'s clients and servers: a
    C{MemoryReactor} (dials are recorded in C{tcpClients}, C{sslClients} and
    C{connectors}, listens in C{tcpServers} and C{sslServers}) whose
    connectors the network completes, whose ports listen on the network,
    and whose time is the network's clock.
    """

    def __init__(self, network):
        MemoryReactor.__init__(self)
        self.network = network

    def seconds(self):
        """The clock's time."""
        return self.network.clock.seconds()

    def callLater(self, delay, callable, *args, **kw):
        """Schedule a call on the clock."""
        return self.network.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self):
        """The clock's pending calls (the server's included)."""
        return self.network.clock.getDelayedCalls()

    def advance(self, seconds):
        """Same as L{MemoryNetwork.advance}."""
        self.network.advance(seconds)

    def _dial(self, host, port, factory, timeout, tls):
        if isinstance(factory, WebSocketClientFactory):
            _use_clock(factory, self.network.clock)
        connector = _MemoryConnector(self.network, host, port, factory, timeout, tls)
        self.connectors.append(connector)
        connector.connect()
        return connector

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        """Dial C{host}:C{port}; the network connects it to its server."""
        self.tcpClients.append((host, port, factory, timeout, bindAddress))
        return self._dial(host, port, factory, timeout, None)

    def connectSSL(self, host, port, factory, contextFactory, timeout=30, bindAddress=None):
        """Dial C{host}:C{port} with TLS; the network connects it to its server."""
        self.sslClients.append((host, port, factory, contextFactory, timeout, bindAddress))
        return self._dial(host, port, factory, timeout, contextFactory)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        """Listen on C{port} of the network (see L{MemoryNetwork.reactor})."""
        self.tcpServers.append((port, factory, backlog, interface))
        return self.network._listen(port, factory, interface, None)

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        """Listen with TLS on C{port} of the network (see L{MemoryNetwork.reactor})."""
        self.sslServers.append((port, factory, contextFactory, backlog, interface))
        return self.network._listen(port, factory, interface, contextFactory)


@implementer(IListeningPort)
class _MemoryPort:
    """
    What a server listening on a L{MemoryNetwork} gets from C{listen}: a
    port of the network's reactor (C{tls} its TLS options, or C{None}), or
    the network's own server, that takes the dials to the ports nobody
    listens on.
    """

    def __init__(self, network, factory, address, tls=None):
        self.network = network
        self.factory = factory
        self.address = address
        self.tls = tls

    def __repr__(self):
        return "<memory port {} of {!r}>".format(self.address.port, self.factory)

    def startListening(self):
        pass

    def stopListening(self):
        """Stop accepting connections (the open ones stay)."""
        network = self.network
        if network._default is self:
            network._default = None
            self.factory.doStop()
        elif network._ports.get(self.address.port) is self:
            del network._ports[self.address.port]
            self.factory.doStop()

    def getHost(self):
        return self.address


@implementer(IStreamServerEndpoint)
class _MemoryEndpoint:
    """The endpoint a server listens on to accept a L{MemoryNetwork}'s dials."""

    def __init__(self, network):
        self.network = network

    def listen(self, factory):
        port = self.network._default = _MemoryPort(
            self.network, factory, IPv4Address("TCP", "127.0.0.1", 0))
        factory.doStart()
        return succeed(port)


class MemoryNetwork:
    """
    Real clients and a real server connected in memory.

    The server listens on the network (an L{scserver.SCServer} through its
    own C{listen}, so it starts as in production); clients dial it through
    L{reactor}, a memory reactor that records the dials as Twisted's
    C{MemoryReactor} does (C{tcpClients}, C{sslClients}, C{connectors}) and
    connects every one of them (whatever the host and port) to the server's
    autobahn factory over in-memory transports.  Bytes move only when the
    network is pumped (L{flush}, L{advance}): synchronously and in a fixed
    order, so a test is deterministic.

    Servers may also listen through L{reactor}, whose C{listenTCP} and
    C{listenSSL} take any factory (an L{scserver.SCServer}'s, a
    twisted.web C{Site} serving its C{resource}, ...): make the server with
    C{reactor=network.reactor} and give its C{listen} any endpoint, a
    string such as C{"tcp:0:interface=127.0.0.1"} or an endpoint object
    such as C{TCP4ServerEndpoint(network.reactor, 0)}.  Port 0 gets a
    number from 40001 up.  A dial then goes to the port it names (whatever
    the host); the network's own server, when it has one, takes the dials
    to the other ports, else they are refused.  Such a network needs no
    server of its own::

        network = MemoryNetwork(clock=Clock())
        server = make_server(network.reactor)
        port = self.successResultOf(server.listen("tcp:0:interface=127.0.0.1"))
        client = network.client(
            "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port))

    Time is the server's clock (C{server.reactor}, a
    C{twisted.internet.task.Clock} or a C{MemoryReactorClock}), shared by the
    clients, by autobahn's timers (the open and close handshake timeouts,
    auto-ping: the network points the factories' timers at the clock) and by
    the TLS layer.  Nothing runs on the global reactor::

        network = MemoryNetwork(make_server())
        client = network.client(auto_reconnect=False)
        d = client.connect()
        network.flush()
        self.assertIs(self.successResultOf(d), client)

    @ivar server: the server: an L{scserver.SCServer}, or an autobahn
        C{WebSocketServerFactory} such as a L{RawServer}; or C{None}.
    @ivar clock: the clock (C{server.reactor}, or the C{clock} given).
    @ivar reactor: the reactor to give clients, and servers that listen
        through it (its time is L{clock}; its C{advance} is L{advance}).
    @ivar tls: the server's TLS options (an
        C{IOpenSSLServerConnectionCreator}), or C{None}.
    @ivar connections: every L{MemoryConnection}, in the order they were
        made (closed ones included).
    @ivar accepting: when C{True} (the default), L{flush} connects the dials
        at once; when C{False} they wait for L{accept} or L{refuse} (or
        their timeout), as dials to a server that does not answer.
    """

    def __init__(self, server=None, tls=None, clock=None):
        """
        @param server: an L{scserver.SCServer} made with a clock as its
            reactor (see L{make_server}), or an autobahn
            C{WebSocketServerFactory} (a L{RawServer}) made with a clock as
            its C{reactor}; or C{None}, for servers that listen through
            L{reactor}.
        @param tls: the server's TLS options (an
            C{IOpenSSLServerConnectionCreator} such as
            C{PrivateCertificate.options()}), to accept C{wss://} dials;
            without it they are refused.
        @param clock: the clock of a network without C{server} (a
            C{twisted.internet.task.Clock} or a C{MemoryReactorClock}); a
            new C{Clock} when C{None}.  With a server, its reactor is the
            clock.
        @raise TypeError: the clock is not a C{Clock} (or a
            C{MemoryReactorClock}), or both C{server} and C{clock} are given.
        """
        if server is not None and clock is not None:
            raise TypeError("A MemoryNetwork with a server runs on the server's reactor: "
                            "give no clock")
        if server is not None:
            clock = server.reactor
        elif clock is None:
            clock = Clock()
        if not (hasattr(clock, "advance") and hasattr(clock, "getDelayedCalls")):
            raise TypeError("The network's clock (the server's reactor) must be a Clock or a "
                            "MemoryReactorClock, not {!r}".format(clock))
        self.server = server
        self.clock = clock
        self.tls = tls
        self.reactor = _NetworkReactor(self)
        self.connections = []
        self.accepting = True
        self._dials = []
        self._default = None
        self._ports = {}
        self._port_numbers = itertools.count(40001)
        self._io_clock = Clock()
        self._client_ports = itertools.count(50001)
        endpoint = _MemoryEndpoint(self)
        if isinstance(server, WebSocketServerFactory):
            _use_clock(server, self.clock)
            endpoint.listen(server)
        elif server is not None:
            _use_clock(server.factory, self.clock)
            server.listen(endpoint)

    def __repr__(self):
        return "<MemoryNetwork {!r}: {} connections>".format(self.server, len(self.connections))

    @property
    def default_url(self):
        """
        The URL L{client} dials by default: C{ws://localhost/} (or
        C{wss://} with L{tls}) and the server's C{path}
        (C{/socketcluster/} for a L{RawServer}); C{None} without a server.
        """
        if self.server is None:
            return None
        if isinstance(self.server, WebSocketServerFactory):
            path = "/socketcluster/"
        else:
            path = self.server.path
        return "{}://localhost{}".format("wss" if self.tls is not None else "ws", path)

    def client(self, url=None, **options):
        """
        Make a L{scserver.client.SCClientSocket} that dials through this
        network.  It is not connected yet: call its C{connect()}, then
        L{flush}.

        @param url: the URL; L{default_url} when C{None} (a network without
            a server needs one).
        @param options: the client's options (C{reactor} is this network's).
            Pass C{auto_reconnect=False} when reconnection timers would be
            in the way.
        @return: the L{scserver.client.SCClientSocket}.
        """
        from .client import SCClientSocket

        url = url or self.default_url
        if url is None:
            raise ValueError("This MemoryNetwork has no server: give the URL to dial")
        return SCClientSocket(url, reactor=self.reactor, **options)

    def connect_protocol(self, client_factory, tls=None):
        """
        Connect a client factory (an autobahn C{WebSocketClientFactory}, or
        any C{ClientFactory} to talk to the server below the WebSocket
        layer) to the server now, and flush.

        @param client_factory: the factory (its C{host} and C{port}, when it
            has them, are dialed).
        @param tls: client TLS options (an C{IOpenSSLClientConnectionCreator})
            to dial with TLS, or C{None}.
        @return: the L{MemoryConnection} (its protocols, once flushed, have
            done the WebSocket handshake unless the server refused it).
        @raise twisted.internet.error.ConnectError: when the network could not
            connect (the factory's C{clientConnectionFailed} was called).
        """
        host = getattr(client_factory, "host", None) or "localhost"
        port = getattr(client_factory, "port", None) or (443 if tls is not None else 80)
        if tls is None:
            connector = self.reactor.connectTCP(host, port, client_factory)
        else:
            connector = self.reactor.connectSSL(host, port, client_factory, tls)
        with _txaio_loop(self.clock):
            self._serve(connector)
        if connector.connection is None:
            raise net_error.ConnectError("The network could not connect {!r}".format(client_factory))
        self.flush()
        return connector.connection

    def _serve(self, connector):
        """Connect a dial to the server, or fail it."""
        if connector.state != "connecting":
            return False
        port = self._ports.get(connector.port, self._default)
        if port is None:
            connector._failed(net_error.ConnectionRefusedError(
                "Nothing listens on port {} of this MemoryNetwork".format(connector.port)))
            return True
        factory = port.factory
        tls = self.tls if port is self._default else port.tls
        if connector.tls is not None and tls is None:
            connector._failed(net_error.ConnectionRefusedError(
                "This MemoryNetwork has no TLS on port {}".format(connector.port)))
            return True
        if connector.tls is None and port.tls is not None:
            connector._failed(net_error.ConnectionRefusedError(
                "Port {} of this MemoryNetwork only takes TLS".format(connector.port)))
            return True
        client_address = IPv4Address("TCP", "127.0.0.1", next(self._client_ports))
        server_address = IPv4Address("TCP", "127.0.0.1", connector.port)
        client_factory = connector.factory
        if connector.tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            client_factory = TLSMemoryBIOFactory(connector.tls, True, client_factory,
                                                 clock=self._io_clock)
            factory = TLSMemoryBIOFactory(tls, False, factory, clock=self._io_clock)
        server_protocol = factory.buildProtocol(client_address)
        client_protocol = client_factory.buildProtocol(server_address) \
            if server_protocol is not None else None
        if client_protocol is None:
            connector._failed(net_error.ConnectionRefusedError("A factory built no protocol"))
            return True
        connection = MemoryConnection(
            self, connector, client_protocol, server_protocol,
            _MemoryTransport(client_address, server_address),
            _MemoryTransport(server_address, client_address),
            connector.tls is not None)
        self.connections.append(connection)
        connector._connected(connection)
        connection._start()
        return True

    def _listen(self, number, factory, interface, tls):
        """
        Listen on port C{number} (0: the next free one) of the network.

        @return: the C{IListeningPort}.
        @raise twisted.internet.error.CannotListenError: something listens
            on that port already.
        """
        if number == 0:
            number = next(n for n in self._port_numbers if n not in self._ports)
        elif number in self._ports:
            raise net_error.CannotListenError(interface, number, "address already in use")
        port = self._ports[number] = _MemoryPort(
            self, factory, IPv4Address("TCP", interface or "0.0.0.0", number), tls)
        if isinstance(factory, WebSocketServerFactory):
            _use_clock(factory, self.clock)
        factory.doStart()
        return port

    def connection_of(self, protocol):
        """
        Find the connection of a protocol.

        @param protocol: the client's or the server's protocol of a
            connection (see L{MemoryConnection.client_protocol} and
            L{MemoryConnection.server_protocol}).
        @return: its L{MemoryConnection}.
        @raise KeyError: no connection of this network has that protocol.
        """
        for connection in self.connections:
            if protocol is connection.client_protocol or protocol is connection.server_protocol:
                return connection
        raise KeyError(protocol)

    def accept(self):
        """
        Connect the waiting dials now (even when not L{accepting}), and
        flush.

        @return: the new L{MemoryConnection}s, in the order of the dials.
        """
        before = len(self.connections)
        with _txaio_loop(self.clock):
            for connector in list(self._dials):
                self._serve(connector)
        self.flush()
        return self.connections[before:]

    def refuse(self, reason=None):
        """
        Fail the waiting dials: their factories' C{clientConnectionFailed}
        gets C{reason}.

        @param reason: an exception; a
            C{twisted.internet.error.ConnectionRefusedError} by default.
        """
        with _txaio_loop(self.clock):
            for connector in list(self._dials):
                connector._failed(reason if reason is not None else net_error.ConnectionRefusedError())

    def flush(self):
        """
        Pump every connection until no bytes move: connect the waiting
        dials (when L{accepting}), deliver what each end wrote, process the
        closes.  The clock does not move.
        """
        with _txaio_loop(self.clock):
            for _ in range(_MAX_ROUNDS):
                moved = False
                if self.accepting:
                    for connector in list(self._dials):
                        moved = self._serve(connector) or moved
                for connection in list(self.connections):
                    moved = connection._pump() or moved
                if not moved:
                    return
        raise RuntimeError("{!r} still moves bytes after {} rounds".format(self, _MAX_ROUNDS))

    def advance(self, seconds):
        """
        Move the clock forward by C{seconds}, flushing after every call that
        comes due: a reply sent by a timer arrives before the next timer
        fires, as on a fast network.

        @param seconds: how far (0 runs the calls due now).
        """
        clock = self.clock
        target = clock.seconds() + seconds
        with _txaio_loop(clock):
            self.flush()
            stalled = 0
            while True:
                due = [call.getTime() for call in clock.getDelayedCalls()
                       if call.getTime() <= target]
                if not due:
                    break
                before = clock.seconds()
                clock.advance(max(0.0, min(due) - before))
                self.flush()
                stalled = stalled + 1 if clock.seconds() == before else 0
                if stalled > _MAX_ROUNDS:
                    raise RuntimeError(
                        "{!r}: calls keep coming due at {}".format(self, clock.seconds()))
            if clock.seconds() < target:
                clock.advance(target - clock.seconds())
                self.flush()


class RawServerProtocol(WebSocketServerProtocol):
    """
    One connection of a L{RawServer}: an autobahn WebSocket server protocol
    that records what the client sends and does only what the test tells
    it.  It never answers a close frame, and never ends the connection, by
    itself.

    @ivar request: the upgrade request (autobahn's C{ConnectionRequest}:
        C{path}, C{params}, C{headers}), once received.
    @ivar is_websocket_open: C{True} once the WebSocket handshake is done.
    @ivar messages: the messages received, in order: C{str} for a text
        frame, C{bytes} for a binary frame.
    @ivar close_frame: C{None}, or C{(code, reason)} of the last close frame
        received (C{code} and C{reason} are C{None} when absent).
    @ivar lost: C{None}, or the C{Failure} of the TCP connection's end.
    """

    def __init__(self):
        WebSocketServerProtocol.__init__(self)
        self.request = None
        self.is_websocket_open = False
        self.messages = []
        self.close_frame = None
        self.lost = None

    def onConnect(self, request):
        """Record the upgrade request; refuse it when the factory says so."""
        self.request = request
        deny = self.factory.deny
        if deny is not None:
            raise ConnectionDeny(*deny)
        return None

    def onOpen(self):
        """Record that the WebSocket is open."""
        self.is_websocket_open = True

    def onMessage(self, payload, isBinary):
        """Record a message."""
        if isBinary:
            self.messages.append(bytes(payload))
        else:
            self.messages.append(payload.decode("utf-8"))

    def onCloseFrame(self, code, reasonRaw):
        """Record a close frame, and do not answer it."""
        reason = None
        if reasonRaw is not None:
            try:
                reason = reasonRaw.decode("utf-8")
            except UnicodeDecodeError:
                reason = reasonRaw
        self.close_frame = (code, reason)
        return None

    def connectionLost(self, reason):
        """Record the end of the TCP connection."""
        self.lost = reason
        WebSocketServerProtocol.connectionLost(self, reason)

    def clear(self):
        """Forget the messages received so far."""
        del self.messages[:]

    def send(self, payload, binary=None):
        """
        Send a message.

        @param payload: C{str} (sent UTF-8 encoded) or C{bytes}.
        @param binary: send a binary frame (C{True}) or a text frame
            (C{False}); by default, binary for C{bytes}, text for C{str}.
        """
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
            if binary is None:
                binary = False
        elif binary is None:
            binary = True
        self.sendMessage(bytes(payload), binary)

    def close(self, code=None, reason=None):
        """
        Send a close frame, any code allowed (nothing is checked); the TCP
        connection stays until L{drop}.

        @param code: the close code, or C{None} for a frame without one.
        @param reason: a C{str} reason, or C{None}.
        """
        self.sendCloseFrame(code=code, reasonUtf8=None if reason is None else reason.encode("utf-8"),
                            isReply=False)

    def drop(self):
        """End the TCP connection abruptly (the client sees 1006 unless the close handshake is done)."""
        self.dropConnection(abort=True)


class RawServer(WebSocketServerFactory):
    """
    A WebSocket server the test plays, to test a client: it records every
    connection (L{protocols}) and their messages, and sends what the test
    says (see L{RawServerProtocol}).  Serve it with a L{MemoryNetwork}.

    autobahn's own timers are off (no open or close handshake timeout, no
    auto-ping): nothing happens unless the test does it.

    @ivar protocols: the L{RawServerProtocol}s, in the order of the
        connections.
    @ivar deny: C{None}, or C{(status, reason)}: refuse the upgrade
        requests with that HTTP status.
    """

    protocol = RawServerProtocol

    def __init__(self, reactor, deny=None):
        """
        @param reactor: the clock (a C{twisted.internet.task.Clock} or a
            C{MemoryReactorClock}).
        @param deny: see L{deny}.
        """
        WebSocketServerFactory.__init__(self, reactor=reactor)
        self.deny = deny
        self.protocols = []
        self.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0,
                                autoPingInterval=0)

    def buildProtocol(self, addr):
        """Build and record a L{RawServerProtocol}."""
        protocol = WebSocketServerFactory.buildProtocol(self, addr)
        self.protocols.append(protocol)
        return protocol
