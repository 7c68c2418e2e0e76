"""
Test the SocketCluster handlers of an application without a network.

Modelled on treq's C{StubTreq}: a L{FakeConnection} attaches a real
L{scserver.SCServerSocket} of a real L{scserver.SCServer} to an in-memory
client.  What the test sends goes through the server's codec and protocol
engine exactly as a WebSocket message would; what the server sends is
recorded, raw and decoded.  Time is a L{twisted.internet.task.Clock}, so
ping intervals, ack timeouts and batching are driven by C{advance()}.

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

This module never imports the global reactor.
"""

from urllib.parse import parse_qs, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from ._engine import PING_V1, PING_V2, PONG_V1
from ._transport import UpgradeRequest
from .errors import BadConnectionError, as_exception, dehydrate_error, hydrate_error

__all__ = [
    "FakeConnection",
    "NotAnswered",
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

    @param clock: a L{twisted.internet.task.Clock} (or any
        C{IReactorTime}); a new C{Clock} when C{None}.  It becomes the
        server's reactor, so only use the server with L{FakeConnection}s
        (it cannot listen on real ports).
    @param options: the server options; C{auth_key} defaults to a fixed
        test secret (so no random key is generated with a warning).
    @return: the server; its clock is C{server.reactor}.
    """
    from .server import SCServer

    if clock is None:
        clock = Clock()
    options.setdefault("auth_key", "scserver.testing-secret-key")
    return SCServer(reactor=clock, **options)


class RecordingOutput:
    """
    The output of a fake connection: what a L{scserver.SCServerSocket}
    writes to it is recorded instead of going to a WebSocket.

    It provides what the socket expects from its transport adapter:
    C{write(payload)}, C{write_prepared(prepared)} and
    C{close(code, reason)}.

    @ivar payloads: every payload written while open, in order: L{str} for
        a text frame, L{bytes} for a binary frame.
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

        @param prepared: what C{server._prepare_message} returns (autobahn's
            C{PreparedMessage}, with C{payload} bytes and a C{binary} flag),
            or a plain C{str}/C{bytes} payload.
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
        rid = reply["rid"]
        if type(rid) is bool:
            return
        try:
            d = self._invokes.pop(rid, None)
        except TypeError:
            return
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
