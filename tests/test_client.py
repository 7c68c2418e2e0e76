"""
Tests for L{scserver.client}.

Every test goes through the client's public API and the wire only.  Most
drive L{SCClientSocket} against a L{scserver.testing.RawServer} in memory
(a L{scserver.testing.MemoryNetwork}): the client dials through the
network's memory reactor (the dials are recorded in C{tcpClients}), the test
accepts or refuses them, plays the server's messages and close frames
(encoded with the codec) and reads what the client sent, as the raw server
received it.  L{AdapterTests} run the autobahn protocol over a
L{StringTransport} (the exact frames); L{MemoryServerTests} talk to a real
L{scserver.SCServer} in memory, over TCP and TLS; L{LoopbackTests} keep one
real socket: C{wss://} through the global reactor's C{connectSSL}.
"""

import base64
import datetime
import hashlib
import json
import re
import struct

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer, error as ierror
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from scserver import errors
from scserver.client import SCClientChannel, SCClientSocket, connect, decode_auth_token
from scserver.codec import JSONCodec, MinBinCodec
from scserver.testing import MemoryNetwork, RawServer, make_server

URL = "ws://example.com:8000/socketcluster/"

ALICE_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJ1c2VybmFtZSI6ImFsaWNlIiwiaWF0IjoxNzk1NjM5NzEwLCJleHAiOjE3OTU3MjYxMTB9."
    "zDOB-Mwxhl1H5HNbsJ_gH09Id22bLhBKuFyPwEWezRM"
)
ALICE = {"username": "alice", "iat": 1795639710, "exp": 1795726110}


def make_token(payload):
    """A JWT-shaped string with C{payload} (no valid signature)."""
    def part(obj):
        raw = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    return "{}.{}.c2ln".format(part({"alg": "HS256", "typ": "JWT"}), part(payload))


class Wire:
    """
    One connection as the raw server sees it.  Reading L{sent} or L{closed}
    flushes the network first, so that what the client wrote has arrived.

    @ivar protocol: the L{scserver.testing.RawServerProtocol}.
    """

    def __init__(self, network, connection, codec):
        self.network = network
        self.connection = connection
        self.protocol = connection.server_protocol
        self.codec = codec

    @property
    def sent(self):
        """The messages the client sent: L{str} (text frames) or L{bytes}."""
        self.network.flush()
        return self.protocol.messages

    @property
    def closed(self):
        """The close frame the client sent, C{(code, reason)}, or C{None}."""
        self.network.flush()
        return self.protocol.close_frame

    def packets(self):
        """The sent payloads, decoded."""
        return [self.codec.decode(p) if p != "" else "" for p in self.sent]

    def last(self):
        return self.packets()[-1]

    def clear(self):
        self.network.flush()
        self.protocol.clear()


class Harness:
    """
    An L{SCClientSocket} dialing a L{RawServer} through a
    L{MemoryNetwork} that does not accept by itself, with helpers to play
    the server.
    """

    def __init__(self, url=URL, codec=None, **options):
        options.setdefault("auto_reconnect", False)
        self.server = RawServer(Clock())
        self.network = MemoryNetwork(self.server)
        self.network.accepting = False
        self.reactor = self.network.reactor
        self.codec = codec or JSONCodec()
        self.socket = SCClientSocket(url, reactor=self.reactor, codec_engine=self.codec, **options)
        self.events = []
        for name in ("connect", "connectAbort", "disconnect", "close", "error", "raw",
                     "authenticate", "deauthenticate", "authStateChange", "removeAuthToken",
                     "kickOut", "subscribe", "subscribeFail", "unsubscribe"):
            self.socket.on(name, lambda *args, name=name: self.events.append((name,) + args))
        self.wires = []

    def event_names(self):
        return [e[0] for e in self.events]

    def events_named(self, name):
        return [e[1:] for e in self.events if e[0] == name]

    def dial(self):
        """Call connect() and return its Deferred."""
        return self.socket.connect()

    def open(self):
        """
        The server accepts the last connection attempt: the WebSocket opens
        (and the client sends its handshake).
        """
        connection = self.network.accept()[-1]
        wire = Wire(self.network, connection, self.codec)
        self.wires.append(wire)
        return wire

    def refuse(self):
        """The connection attempt fails: connection refused."""
        self.network.refuse()
        self.network.flush()

    def dial_abandoned(self):
        """
        Whether the client gave its last dial up: the connector stopped, and
        the server gets no connection from it.
        """
        connector = self.reactor.connectors[-1]
        return connector.state == "disconnected" and self.network.accept() == []

    @property
    def wire(self):
        return self.wires[-1]

    def feed(self, obj, wire=None):
        """The server sends C{obj} (encoded with the codec)."""
        (wire or self.wire).protocol.send(self.codec.encode(obj))
        self.network.flush()

    def feed_raw(self, data, is_binary=False, wire=None):
        """The server sends C{data} as it is, in a binary or text frame."""
        (wire or self.wire).protocol.send(data, binary=is_binary)
        self.network.flush()

    def handshake_reply(self, cid=1, id="abc", ping_timeout=20000, authenticated=False, **extra):
        data = {"id": id, "pingTimeout": ping_timeout, "isAuthenticated": authenticated}
        data.update(extra)
        self.feed({"rid": cid, "data": data})

    def connected(self, **kwargs):
        """Dial, open, answer the handshake; return the connect() result."""
        d = self.dial()
        self.open()
        self.handshake_reply(**kwargs)
        self.wire.clear()
        return d

    def remote_close(self, code, reason="", wire=None):
        """
        The server ends the connection: a close frame with C{code} and
        C{reason} (none with 1005) then the TCP connection; 1006 only drops
        the TCP connection.
        """
        protocol = (wire or self.wire).protocol
        if code != 1006:
            protocol.close(None if code == 1005 else code, reason or None)
            self.network.flush()
        protocol.drop()
        self.network.flush()


class DecodeAuthTokenTests(unittest.SynchronousTestCase):
    """L{decode_auth_token} reads the JWT payload without verifying it."""

    def test_real_token(self):
        self.assertEqual(decode_auth_token(ALICE_TOKEN), ALICE)

    def test_padding(self):
        for payload in ({"a": 1}, {"ab": 12}, {"abc": 123}, {"u": "\u00e9\u4e2d"}):
            self.assertEqual(decode_auth_token(make_token(payload)), payload)

    def test_url_safe_alphabet(self):
        payload = {"x": "\xff\xfe>>>???"}
        token = make_token(payload)
        self.assertTrue("-" in token.split(".")[1] or "_" in token.split(".")[1])
        self.assertEqual(decode_auth_token(token), payload)

    def test_garbage(self):
        for token in (None, 42, "", "garbage", "a.!!!.c", "a.bm90IGpzb24.c", "this.is.not-a-jwt"):
            self.assertIsNone(decode_auth_token(token))


class HandshakeTests(unittest.SynchronousTestCase):
    """Connecting and the SocketCluster handshake."""

    def test_dials_the_url(self):
        h = Harness("ws://example.com:8123/socketcluster/?a=b")
        h.dial()
        host, port, factory, timeout, _ = h.reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("example.com", 8123, 20))
        self.assertEqual(factory.resource, "/socketcluster/?a=b")
        self.assertEqual(h.socket.state, "connecting")

    def test_default_port(self):
        h = Harness("ws://example.com/socketcluster/")
        h.dial()
        self.assertEqual(h.reactor.tcpClients[0][1], 80)

    def test_wss_uses_tls(self):
        h = Harness("wss://example.com/socketcluster/")
        h.dial()
        self.assertEqual(h.reactor.tcpClients, [])
        host, port, _factory, context, _timeout, _bind = h.reactor.sslClients[0]
        self.assertEqual((host, port), ("example.com", 443))
        self.assertIsNotNone(context)

    def test_wss_custom_context(self):
        marker = object()
        h = Harness("wss://example.com:9443/socketcluster/", ssl_context_factory=marker)
        h.dial()
        self.assertIs(h.reactor.sslClients[0][3], marker)

    def test_handshake_packet(self):
        h = Harness()
        h.dial()
        wire = h.open()
        self.assertEqual(wire.sent, ['{"event":"#handshake","data":{"authToken":null},"cid":1}'])

    def test_handshake_with_token(self):
        h = Harness(auth_token=ALICE_TOKEN)
        h.dial()
        wire = h.open()
        self.assertEqual(wire.last()["data"], {"authToken": ALICE_TOKEN})

    def test_connected(self):
        h = Harness()
        d = h.dial()
        h.open()
        self.assertNoResult(d)
        h.handshake_reply(id="Y7Uw", ping_timeout=1000)
        self.assertIs(self.successResultOf(d), h.socket)
        self.assertEqual(h.socket.state, "open")
        self.assertEqual(h.socket.id, "Y7Uw")
        self.assertEqual(h.socket.ping_timeout, 1.0)
        self.assertEqual(h.socket.auth_state, "unauthenticated")
        self.assertEqual(h.events_named("connect"),
                         [({"id": "Y7Uw", "pingTimeout": 1000, "isAuthenticated": False},)])

    def test_connected_authenticated(self):
        h = Harness(auth_token=ALICE_TOKEN)
        h.connected(authenticated=True)
        self.assertEqual(h.socket.auth_state, "authenticated")
        self.assertEqual(h.socket.signed_auth_token, ALICE_TOKEN)
        self.assertEqual(h.socket.auth_token, ALICE)
        self.assertEqual(h.events_named("authenticate"), [(ALICE_TOKEN,)])
        self.assertEqual(h.event_names()[-1], "connect")

    def test_bad_token_at_handshake(self):
        """
        v14 order: #removeAuthToken, then the reply with an authError; the
        socket connects unauthenticated and forgets the token.
        """
        h = Harness(auth_token="garbage")
        d = h.dial()
        h.open()
        h.feed({"event": "#removeAuthToken", "data": None})
        h.handshake_reply(authError={"message": "jwt malformed", "name": "AuthTokenInvalidError"})
        self.successResultOf(d)
        self.assertEqual(h.events_named("removeAuthToken"), [("garbage",)])
        self.assertIsNone(h.socket.signed_auth_token)
        self.assertEqual(h.socket.auth_state, "unauthenticated")
        self.assertEqual(h.wire.sent[1:], [])

    def test_connect_when_open(self):
        h = Harness()
        h.connected()
        self.assertIs(self.successResultOf(h.socket.connect()), h.socket)
        self.assertEqual(len(h.reactor.tcpClients), 1)

    def test_connect_twice_while_connecting(self):
        h = Harness()
        d1 = h.dial()
        d2 = h.dial()
        self.assertEqual(len(h.reactor.tcpClients), 1)
        h.open()
        h.handshake_reply()
        self.assertIs(self.successResultOf(d1), h.socket)
        self.assertIs(self.successResultOf(d2), h.socket)

    def test_handshake_rejected_v2(self):
        """A v2 rejection carries statusCode in the error: close with it."""
        h = Harness()
        d = h.dial()
        wire = h.open()
        h.feed({"rid": 1, "error": {"message": "Handshake rejected by test middleware",
                                    "name": "HandshakeRejectedError", "statusCode": 4555}})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.name, "HandshakeRejectedError")
        self.assertEqual(failure.value.statusCode, 4555)
        self.assertEqual(wire.closed, (4555, None))
        self.assertEqual(h.socket.state, "closed")
        self.assertEqual(h.events_named("connectAbort"),
                         [(4555, "HandshakeRejectedError: Handshake rejected by test middleware")])
        errs = [e[0] for e in h.events_named("error")]
        self.assertEqual(errs[0].name, "HandshakeRejectedError")
        self.assertIsInstance(errs[1], errors.SocketProtocolError)
        self.assertEqual(errs[1].code, 4555)
        self.assertEqual(h.event_names()[-2:], ["connectAbort", "close"])

    def test_handshake_rejected_v1(self):
        """A v1 rejection carries data.code, then #disconnect (ignored)."""
        h = Harness(protocol_version=1)
        d = h.dial()
        wire = h.open()
        h.feed({"rid": 1, "error": {"message": "Action was silently blocked by handshakeSC middleware",
                                    "name": "SilentMiddlewareBlockedError", "type": "handshakeSC"},
                "data": {"code": 4008}})
        h.feed({"event": "#disconnect", "data": {"code": 4008}}, wire=wire)
        failure = self.failureResultOf(d, errors.SilentMiddlewareBlockedError)
        self.assertEqual(failure.value.type, "handshakeSC")
        self.assertEqual(wire.closed, (4008, None))
        self.assertEqual(len(h.events_named("connectAbort")), 1)
        # No #disconnect echo: the socket was not open.
        self.assertEqual(len(wire.sent), 1)

    def test_handshake_error_without_code(self):
        h = Harness()
        d = h.dial()
        wire = h.open()
        h.feed({"rid": 1, "error": "nope"})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.value, "nope")
        self.assertEqual(wire.closed, (4003, None))

    def test_handshake_timeout(self):
        h = Harness(ack_timeout=2)
        d = h.dial()
        wire = h.open()
        h.reactor.advance(1.9)
        self.assertNoResult(d)
        h.reactor.advance(0.1)
        self.failureResultOf(d, errors.TimeoutError)
        self.assertEqual(wire.closed, (4003, None))
        self.assertEqual(h.events_named("connectAbort")[0][0], 4003)

    def test_connect_timeout(self):
        h = Harness(connect_timeout=5)
        d = h.dial()
        h.reactor.advance(5)
        failure = self.failureResultOf(d, errors.BadConnectionError)
        self.assertEqual(failure.value.type, "connectAbort")
        self.assertEqual(failure.value.code, 4007)
        self.assertTrue(h.dial_abandoned())
        self.assertEqual(h.events_named("connectAbort"), [(4007, None)])

    def test_connect_timeout_cancelled_on_open(self):
        h = Harness(connect_timeout=5, ack_timeout=10)
        d = h.dial()
        h.reactor.advance(3)
        h.open()
        h.reactor.advance(2.5)
        self.assertNoResult(d)
        h.handshake_reply()
        self.successResultOf(d)

    def test_connection_refused(self):
        h = Harness()
        d = h.dial()
        h.refuse()
        failure = self.failureResultOf(d, errors.BadConnectionError)
        self.assertEqual(failure.value.code, 1006)
        self.assertEqual(h.events_named("connectAbort")[0][0], 1006)
        self.assertEqual(h.socket.state, "closed")
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_upgrade_refused(self):
        """The HTTP upgrade fails (401/403/400): autobahn reports 1006."""
        h = Harness()
        h.server.deny = (401, "Unauthorized")
        d = h.dial()
        h.open()
        self.failureResultOf(d, errors.BadConnectionError)
        [(code, reason)] = h.events_named("connectAbort")
        self.assertEqual(code, 1006)
        # autobahn's reason: 'connection was closed uncleanly ("WebSocket
        # connection upgrade failed [401]: Unauthorized")'.
        self.assertTrue(reason.startswith("connection was closed uncleanly"), reason)
        self.assertIn("401", reason)

    def test_cancel_connect(self):
        h = Harness()
        d = h.dial()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(h.socket.state, "closed")
        self.assertTrue(h.dial_abandoned())
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_events_before_handshake_reply(self):
        """
        A v14 server sends events from its connection handler before the
        handshake reply; handlers attached before connect() see them and can
        answer them.
        """
        h = Harness()
        got = []
        h.socket.on("srvNoAck", lambda data, respond: got.append(data))
        h.socket.on("srvAck", lambda data, respond: respond(None, {"got": data}))
        d = h.dial()
        wire = h.open()
        h.feed({"event": "srvNoAck", "data": {"a": 1}})
        h.feed({"event": "srvAck", "data": {"b": 2}, "cid": 1})
        h.handshake_reply()
        self.successResultOf(d)
        self.assertEqual(got, [{"a": 1}])
        self.assertEqual(wire.sent[1], '{"rid":1,"data":{"got":{"b":2}}}')

    def test_bad_protocol_version(self):
        self.assertRaises(errors.InvalidArgumentsError, SCClientSocket, URL, protocol_version=3)

    def test_bad_reconnect_option(self):
        self.assertRaises(errors.InvalidArgumentsError, SCClientSocket, URL,
                          reconnect_options={"initialDelay": 1})


class EmitTests(unittest.SynchronousTestCase):
    """emit, invoke and their replies."""

    def setUp(self):
        self.h = Harness(ack_timeout=2)
        self.h.connected()
        self.socket = self.h.socket
        self.wire = self.h.wire

    def test_emit_without_callback(self):
        self.socket.emit("chat", "hello")
        self.socket.emit("ping")
        self.socket.emit("obj", {"a": [1, 2]})
        self.assertEqual(self.wire.sent, [
            '{"event":"chat","data":"hello"}',
            '{"event":"ping"}',
            '{"event":"obj","data":{"a":[1,2]}}',
        ])

    def test_emit_with_callback(self):
        results = []
        self.socket.emit("echo", {"msg": "hi"}, lambda err, data: results.append((err, data)))
        self.assertEqual(self.wire.sent, ['{"event":"echo","data":{"msg":"hi"},"cid":2}'])
        self.h.feed({"rid": 2, "data": {"echoed": {"msg": "hi"}}})
        self.assertEqual(results, [(None, {"echoed": {"msg": "hi"}})])

    def test_emit_callback_error_and_data(self):
        results = []
        self.socket.emit("failWithData", None, lambda err, data: results.append((err, data)))
        self.h.feed({"rid": 2, "error": {"message": "Partial failure", "name": "PartialError"},
                     "data": {"partial": True}})
        [(err, data)] = results
        self.assertEqual((err.name, str(err), data), ("PartialError", "Partial failure", {"partial": True}))

    def test_emit_callback_string_error(self):
        results = []
        self.socket.emit("failString", None, lambda err, data: results.append((err, data)))
        self.h.feed({"rid": 2, "error": "plain string error"})
        self.assertEqual(results, [("plain string error", None)])

    def test_emit_timeout(self):
        results = []
        self.socket.emit("unhandled", "anyone?", lambda err, data: results.append((err, data)))
        self.h.reactor.advance(1.9)
        self.assertEqual(results, [])
        self.h.reactor.advance(0.1)
        [(err, data)] = results
        self.assertIsInstance(err, errors.TimeoutError)
        self.assertEqual(str(err), "Event response for 'unhandled' timed out")
        # A late reply is ignored.
        self.h.feed({"rid": 2, "data": 1})
        self.assertEqual(len(results), 1)
        self.assertEqual(self.socket.state, "open")

    def test_cids_increase(self):
        self.socket.emit("a", 1, lambda *a: None)
        self.socket.invoke("b")
        self.assertEqual([p["cid"] for p in self.wire.packets()], [2, 3])

    def test_invoke(self):
        d = self.socket.invoke("echo", [1, 2])
        self.assertEqual(self.wire.last(), {"event": "echo", "data": [1, 2], "cid": 2})
        self.assertNoResult(d)
        self.h.feed({"rid": 2, "data": {"echoed": [1, 2]}})
        self.assertEqual(self.successResultOf(d), {"echoed": [1, 2]})

    def test_invoke_no_data(self):
        d = self.socket.invoke("ackNoData", "x")
        self.h.feed({"rid": 2})
        self.assertIsNone(self.successResultOf(d))

    def test_invoke_custom_error(self):
        d = self.socket.invoke("fail", 1)
        self.h.feed({"rid": 2, "error": {"message": "Something bad happened", "name": "CustomError",
                                         "code": 4242, "details": {"field": "amount"}}})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.name, "CustomError")
        self.assertEqual(failure.value.code, 4242)
        self.assertEqual(failure.value.details, {"field": "amount"})
        self.assertEqual(str(failure.value), "Something bad happened")

    def test_invoke_sc_error(self):
        d = self.socket.invoke("#publish")
        self.h.feed({"rid": 2, "error": {"message": "Client publish feature is disabled",
                                         "name": "InvalidActionError"}})
        self.failureResultOf(d, errors.InvalidActionError)

    def test_invoke_plain_error(self):
        d = self.socket.invoke("failPlain")
        self.h.feed({"rid": 2, "error": {"message": "plain Error, name not assigned"}})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.name, "Error")

    def test_invoke_true_error(self):
        d = self.socket.invoke("failTrue")
        self.h.feed({"rid": 2, "error": True})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertIs(failure.value.value, True)

    def test_invoke_timeout(self):
        d = self.socket.invoke("unhandled")
        self.h.reactor.advance(2)
        self.failureResultOf(d, errors.TimeoutError)

    def test_invoke_cancel(self):
        """Cancelling forgets the request: its ack timer is gone, a late reply is ignored."""
        timers = self.h.reactor.getDelayedCalls()
        d = self.socket.invoke("slow")
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.h.reactor.getDelayedCalls(), timers)
        self.h.feed({"rid": 2, "data": "late"})
        self.assertEqual(self.h.events_named("error"), [])

    def test_invoke_unencodable(self):
        """Nothing is sent and nothing waits (no ack timer) for an unencodable call."""
        timers = self.h.reactor.getDelayedCalls()
        d = self.socket.invoke("bad", {"x": object()})
        self.failureResultOf(d)
        self.assertEqual(self.wire.sent, [])
        self.assertEqual(self.h.reactor.getDelayedCalls(), timers)

    def test_emit_unencodable_raises(self):
        self.assertRaises(Exception, self.socket.emit, "bad", {"x": object()})

    def test_unknown_rid(self):
        self.h.feed({"rid": 99, "data": 1})
        self.h.feed({"rid": [1], "data": 1})
        self.assertEqual(self.h.events_named("raw"), [])

    def test_bytes_data(self):
        self.socket.emit("bin", {"buf": b"\x01\x02\x03\xff"})
        self.assertEqual(self.wire.sent, ['{"event":"bin","data":{"buf":{"base64":true,"data":"AQID/w=="}}}'])

    def test_send_raw(self):
        self.socket.send("hello raw text")
        self.socket.send(b"\x00\x01")
        self.assertEqual(self.wire.sent, ["hello raw text", b"\x00\x01"])


class ServerEventTests(unittest.SynchronousTestCase):
    """Events the server sends, and the respond function."""

    def setUp(self):
        self.h = Harness()
        self.h.connected()
        self.socket = self.h.socket
        self.wire = self.h.wire

    def test_event_without_cid(self):
        got = []
        self.socket.on("srvNoData", lambda data, respond: got.append((data, respond())))
        self.h.feed({"event": "srvNoData"})
        self.assertEqual(got, [(None, None)])
        self.assertEqual(self.wire.sent, [])

    def test_respond_data(self):
        self.socket.on("srvAck", lambda data, respond: respond(None, {"got": data}))
        self.h.feed({"event": "srvAck", "data": {"b": 2}, "cid": 1})
        self.assertEqual(self.wire.sent, ['{"rid":1,"data":{"got":{"b":2}}}'])

    def test_respond_nothing(self):
        self.socket.on("srvAck", lambda data, respond: respond())
        self.h.feed({"event": "srvAck", "cid": 7})
        self.assertEqual(self.wire.sent, ['{"rid":7}'])

    def test_respond_error(self):
        class ClientRefusalError(Exception):
            name = "ClientRefusalError"

            def __init__(self, message):
                Exception.__init__(self, message)
                self.extra = 42

        self.socket.on("srvAckErr", lambda data, respond: respond(ClientRefusalError("client refuses")))
        self.h.feed({"event": "srvAckErr", "data": {"c": 3}, "cid": 2})
        self.assertEqual(json.loads(self.wire.sent[0]), {
            "rid": 2, "error": {"message": "client refuses", "name": "ClientRefusalError", "extra": 42}})

    def test_respond_twice(self):
        def handler(data, respond):
            respond(None, 1)
            respond(None, 2)

        self.socket.on("x", handler)
        self.h.feed({"event": "x", "cid": 3})
        self.assertEqual(self.wire.sent, ['{"rid":3,"data":1}'])

    def test_return_value_is_reply(self):
        self.socket.on("double", lambda data, respond: data * 2)
        self.h.feed({"event": "double", "data": 21, "cid": 4})
        self.assertEqual(self.wire.sent, ['{"rid":4,"data":42}'])

    def test_deferred_reply(self):
        d = defer.Deferred()
        self.socket.on("later", lambda data, respond: d)
        self.h.feed({"event": "later", "cid": 5})
        self.assertEqual(self.wire.sent, [])
        d.callback("done")
        self.assertEqual(self.wire.sent, ['{"rid":5,"data":"done"}'])

    def test_coroutine_reply(self):
        async def handler(data, respond):
            return data + 1

        self.socket.on("inc", handler)
        self.h.feed({"event": "inc", "data": 1, "cid": 6})
        self.assertEqual(self.wire.sent, ['{"rid":6,"data":2}'])

    def test_raising_handler(self):
        def handler(data, respond):
            raise errors.InvalidArgumentsError("bad input")

        self.socket.on("boom", handler)
        self.h.feed({"event": "boom", "cid": 8})
        self.assertEqual(json.loads(self.wire.sent[0]), {
            "rid": 8, "error": {"message": "bad input", "name": "InvalidArgumentsError"}})

    def test_raising_handler_without_cid_is_logged(self):
        def handler(data, respond):
            raise ValueError("oops")

        self.socket.on("boom", handler)
        self.h.feed({"event": "boom"})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_once_and_off(self):
        got = []
        handler = self.socket.once("x", lambda data, respond: got.append(data))
        self.h.feed({"event": "x", "data": 1})
        self.h.feed({"event": "x", "data": 2})
        self.assertEqual(got, [1])
        self.socket.on("y", handler)
        self.socket.off("y", handler)
        self.h.feed({"event": "y", "data": 3})
        self.assertEqual(got, [1])

    def test_reserved_names_ignored(self):
        connects = len(self.h.events_named("connect"))
        self.h.feed({"event": "connect", "data": {"id": "forged"}, "cid": 9})
        self.assertEqual(len(self.h.events_named("connect")), connects)
        self.assertEqual(self.wire.sent, [])

    def test_raw(self):
        self.h.feed_raw(b"hello raw text")
        self.h.feed_raw(b"42")
        self.h.feed({"neither": "event nor rid"})
        self.assertEqual(self.h.events_named("raw"), [("hello raw text",), ("42",),
                                                      ({"neither": "event nor rid"},)])

    def test_malformed_packets(self):
        """Odd shapes never raise; they are ignored or reported as raw."""
        results = []
        self.socket.emit("x", None, lambda err, data: results.append(data))
        channel = self.socket.subscribe("news")
        got = []
        channel.watch(got.append)
        for packet in (
            {"event": ["list"], "data": 1},
            {"event": {"a": 1}},
            {"event": "#publish", "data": {"channel": ["news"], "data": 1}},
            {"event": "#publish", "data": {"channel": {"a": 1}}},
            {"event": "#kickOut", "data": {"channel": ["news"]}},
            {"event": "#setAuthToken", "data": {"token": 42}},
            {"event": "#nothing"},
            {"rid": [2]}, {"rid": {"a": 1}}, {"rid": True}, {"rid": None},
            [], [[]], [None, 1, "x"],
        ):
            self.h.feed(packet)
        self.h.feed_raw(b"\xff\xfe", is_binary=True)
        self.h.feed_raw(b"[1, 2")
        self.assertEqual(results, [])
        self.assertEqual(got, [])
        self.assertEqual(self.socket.state, "open")
        self.h.feed({"rid": 2, "data": "fine"})
        self.assertEqual(results, ["fine"])

    def test_binary_frame_json(self):
        got = []
        self.socket.on("bin", lambda data, respond: got.append(data))
        self.h.feed_raw(b'{"event":"bin","data":1}', is_binary=True)
        self.assertEqual(got, [1])

    def test_batch(self):
        got = []
        results = []
        self.socket.on("e", lambda data, respond: got.append(data))
        self.socket.emit("x", None, lambda err, data: results.append(data))
        self.socket.emit("y", None, lambda err, data: results.append(data))
        channel = self.socket.subscribe("news")
        self.h.feed([{"rid": 2, "data": "r1"}, {"rid": 3, "data": "r2"},
                     {"event": "e", "data": 1}, {"rid": 4},
                     {"event": "#publish", "data": {"channel": "news", "data": "hi"}}])
        self.assertEqual(results, ["r1", "r2"])
        self.assertEqual(got, [1])
        self.assertEqual(channel.state, "subscribed")


class PingTests(unittest.SynchronousTestCase):
    """The heartbeat of both protocol versions."""

    def test_v2_ping(self):
        h = Harness()
        h.connected()
        h.feed_raw(b"")
        self.assertEqual(h.wire.sent, [""])
        h.feed_raw(b"#1")
        self.assertEqual(h.wire.sent, [""])
        self.assertEqual(h.events_named("raw"), [("#1",)])

    def test_v1_ping(self):
        h = Harness(protocol_version=1)
        h.connected()
        h.feed_raw(b"#1")
        self.assertEqual(h.wire.sent, ["#2"])
        h.feed_raw(b"")
        self.assertEqual(h.wire.sent, ["#2"])
        self.assertEqual(h.events_named("raw"), [("",)])

    def test_v1_ping_before_handshake_reply(self):
        h = Harness(protocol_version=1)
        d = h.dial()
        wire = h.open()
        h.feed_raw(b"#1")
        self.assertEqual(wire.sent[-1], "#2")
        h.handshake_reply()
        self.successResultOf(d)

    def test_v1_ping_min_bin(self):
        codec = MinBinCodec()
        h = Harness(protocol_version=1, codec=codec)
        d = h.dial()
        wire = h.open()
        self.assertIsInstance(wire.sent[0], bytes)
        self.assertEqual(codec.decode(wire.sent[0]),
                         {"event": "#handshake", "data": {"authToken": None}, "cid": 1})
        h.handshake_reply()
        self.successResultOf(d)
        h.feed_raw(codec.encode("#1"), is_binary=True)
        self.assertEqual(wire.sent[-1], b"\xa2#2")

    def test_ping_timeout(self):
        h = Harness()
        h.connected(ping_timeout=1000)
        h.reactor.advance(0.9)
        h.feed_raw(b"")
        h.reactor.advance(0.9)
        self.assertEqual(h.socket.state, "open")
        h.reactor.advance(0.1)
        self.assertEqual(h.socket.state, "closed")
        self.assertEqual(h.wire.closed, (4000, None))
        self.assertEqual(h.events_named("disconnect"), [(4000, None)])
        [err] = [e[0] for e in h.events_named("error")]
        self.assertEqual((err.code, str(err)), (4000, "Server ping timed out"))

    def test_other_traffic_does_not_reset_ping_timer(self):
        h = Harness()
        h.connected(ping_timeout=1000)
        h.reactor.advance(0.6)
        h.feed({"event": "x"})
        h.reactor.advance(0.6)
        self.assertEqual(h.socket.state, "closed")

    def test_initial_ping_timeout(self):
        """Before the handshake reply the timeout is connect_timeout (v2)."""
        h = Harness(connect_timeout=30, ack_timeout=100)
        d = h.dial()
        h.open()
        h.reactor.advance(30)
        self.failureResultOf(d, errors.BadConnectionError)
        self.assertEqual(h.events_named("connectAbort")[0][0], 4000)

    def test_ping_timeout_disabled(self):
        h = Harness(ping_timeout_disabled=True)
        h.connected(ping_timeout=1000)
        h.reactor.advance(100)
        self.assertEqual(h.socket.state, "open")
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class PubSubTests(unittest.SynchronousTestCase):
    """subscribe, publish, unsubscribe, kickOut."""

    def setUp(self):
        self.h = Harness()
        self.h.connected()
        self.socket = self.h.socket
        self.wire = self.h.wire

    def test_subscribe(self):
        channel = self.socket.subscribe("news")
        self.assertIsInstance(channel, SCClientChannel)
        self.assertEqual((channel.name, channel.state), ("news", "pending"))
        self.assertEqual(self.wire.sent, ['{"event":"#subscribe","data":{"channel":"news"},"cid":2}'])
        d = channel.when_subscribed()
        self.assertNoResult(d)
        self.h.feed({"rid": 2})
        self.assertIs(self.successResultOf(d), channel)
        self.assertEqual(channel.state, "subscribed")
        self.assertEqual(self.h.events_named("subscribe"), [("news", {"channel": "news"})])
        self.assertIs(self.successResultOf(channel.when_subscribed()), channel)
        self.assertEqual(self.socket.subscriptions(), ["news"])
        self.assertTrue(self.socket.is_subscribed("news"))

    def test_subscribe_no_timeout(self):
        """A subscription waits for its reply past ack_timeout (10 s)."""
        channel = self.socket.subscribe("news")
        self.h.reactor.advance(15)
        self.assertEqual(channel.state, "pending")
        self.assertEqual(self.h.events_named("subscribeFail"), [])
        self.h.feed({"rid": 2})
        self.assertEqual(channel.state, "subscribed")

    def test_subscribe_same_channel(self):
        channel = self.socket.subscribe("news")
        self.assertIs(self.socket.subscribe("news"), channel)
        self.assertEqual(len(self.wire.sent), 1)

    def test_subscribe_with_data(self):
        self.socket.subscribe("room", data={"roomKey": "abc"})
        self.assertEqual(self.wire.sent,
                         ['{"event":"#subscribe","data":{"channel":"room","data":{"roomKey":"abc"}},"cid":2}'])

    def test_subscribe_fail(self):
        channel = self.socket.subscribe("forbidden")
        d = channel.when_subscribed()
        self.h.feed({"rid": 2, "error": {"message": "You may not subscribe to forbidden",
                                         "name": "ForbiddenChannelError", "channel": "forbidden"}})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.name, "ForbiddenChannelError")
        self.assertEqual(channel.state, "unsubscribed")
        [(err, name, options)] = self.h.events_named("subscribeFail")
        self.assertEqual((err.name, name, options), ("ForbiddenChannelError", "forbidden", {"channel": "forbidden"}))

    def test_publish_delivery(self):
        channel = self.socket.subscribe("news")
        got = []
        channel.watch(got.append)
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": "early"}})
        self.h.feed({"rid": 2})
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": {"hello": "world"}}})
        self.h.feed({"event": "#publish", "data": {"channel": "other", "data": "x"}})
        self.h.feed({"event": "#publish", "data": "malformed"})
        self.assertEqual(got, ["early", {"hello": "world"}])

    def test_watchers(self):
        channel = self.socket.subscribe("news")
        a, b = [], []
        channel.watch(a.append)
        channel.watch(b.append)
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 1}})
        channel.unwatch(a.append)
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 2}})
        channel.unwatch()
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 3}})
        self.assertEqual((a, b), ([1], [1, 2]))

    def test_watcher_error_is_logged(self):
        channel = self.socket.subscribe("news")
        got = []
        channel.watch(lambda data: 1 / 0)
        channel.watch(got.append)
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 1}})
        self.assertEqual(got, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unsubscribe(self):
        channel = self.socket.subscribe("news")
        got = []
        channel.watch(got.append)
        self.h.feed({"rid": 2})
        channel.unsubscribe()
        self.assertEqual(self.wire.sent[-1], '{"event":"#unsubscribe","data":"news"}')
        self.assertEqual(channel.state, "unsubscribed")
        self.assertEqual(self.h.events_named("unsubscribe"), [("news",)])
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 1}})
        self.assertEqual(got, [])
        # Subscribing again reuses the watched channel.
        self.assertIs(self.socket.subscribe("news"), channel)
        self.h.feed({"rid": 3})
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 2}})
        self.assertEqual(got, [2])

    def test_unsubscribe_pending(self):
        channel = self.socket.subscribe("news")
        d = channel.when_subscribed()
        self.socket.unsubscribe("news")
        self.failureResultOf(d, errors.InvalidActionError)
        self.assertEqual(self.wire.sent[-1], '{"event":"#unsubscribe","data":"news"}')
        self.h.feed({"rid": 2})
        self.assertEqual(channel.state, "unsubscribed")
        self.assertEqual(self.h.events_named("subscribe"), [])

    def test_unsubscribe_unknown(self):
        self.socket.unsubscribe("nothing")
        self.assertEqual(self.wire.sent, [])

    def test_publish(self):
        d = self.socket.publish("news", {"hello": "world"})
        self.assertEqual(self.wire.sent,
                         ['{"event":"#publish","data":{"channel":"news","data":{"hello":"world"}},"cid":2}'])
        self.h.feed({"rid": 2})
        self.assertIsNone(self.successResultOf(d))

    def test_publish_ack_data(self):
        d = self.socket.publish("pubChan", 1)
        self.h.feed({"rid": 2, "data": {"accepted": True, "seq": 7}})
        self.assertEqual(self.successResultOf(d), {"accepted": True, "seq": 7})

    def test_publish_blocked(self):
        d = self.socket.publish("blockedPub", 1)
        self.h.feed({"rid": 2, "error": {"message": "Publishing to blockedPub is not allowed",
                                         "name": "PublishBlockedError"}, "data": {"attempted": True}})
        self.assertEqual(self.failureResultOf(d, errors.RemoteError).value.name, "PublishBlockedError")

    def test_kick_out(self):
        channel = self.socket.subscribe("news")
        got = []
        channel.watch(got.append)
        self.h.feed({"rid": 2})
        self.wire.clear()
        self.h.feed({"event": "#kickOut", "data": {"message": "You are kicked", "channel": "news"}})
        self.assertEqual(self.h.events_named("kickOut"), [("You are kicked", "news")])
        self.assertEqual(self.h.events_named("unsubscribe"), [("news",)])
        self.assertEqual(channel.state, "unsubscribed")
        self.assertEqual(self.wire.sent, [])
        self.h.feed({"event": "#publish", "data": {"channel": "news", "data": 1}})
        self.assertEqual(got, [])

    def test_kick_out_unknown_channel(self):
        self.h.feed({"event": "#kickOut", "data": {"channel": "sports"}})
        self.h.feed({"event": "#kickOut", "data": "junk"})
        self.assertEqual(self.h.events_named("kickOut"), [])

    def test_wait_for_auth(self):
        channel = self.socket.subscribe("private", wait_for_auth=True)
        self.assertEqual(self.wire.sent, [])
        self.assertEqual(channel.state, "pending")
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        self.assertEqual(self.wire.packets(), [
            {"event": "#subscribe", "data": {"channel": "private", "waitForAuth": True}, "cid": 2}])

    def test_wait_for_auth_expired(self):
        """An AuthTokenExpiredError after #removeAuthToken keeps the channel pending."""
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        channel = self.socket.subscribe("private", wait_for_auth=True)
        self.h.feed({"event": "#removeAuthToken", "data": None})
        self.h.feed({"rid": 2, "error": {"message": "The socket auth token has expired",
                                         "name": "AuthTokenExpiredError", "expiry": 1}})
        self.assertEqual(channel.state, "pending")
        self.assertEqual(self.h.events_named("subscribeFail"), [])
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        self.assertEqual(self.wire.last()["event"], "#subscribe")

    def test_subscribe_before_connect(self):
        h = Harness()
        channel = h.socket.subscribe("news")
        d = h.dial()
        wire = h.open()
        self.assertEqual(len(wire.sent), 1)
        h.handshake_reply()
        self.successResultOf(d)
        self.assertEqual(wire.packets()[1:], [{"event": "#subscribe", "data": {"channel": "news"}, "cid": 2}])
        self.assertEqual(channel.state, "pending")


class AuthTests(unittest.SynchronousTestCase):
    """Auth tokens set and removed by the server, authenticate, deauthenticate."""

    def setUp(self):
        self.h = Harness()
        self.h.connected()
        self.socket = self.h.socket
        self.wire = self.h.wire

    def test_set_auth_token(self):
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        self.assertEqual(self.wire.sent, [])
        self.assertEqual(self.socket.auth_state, "authenticated")
        self.assertEqual(self.socket.signed_auth_token, ALICE_TOKEN)
        self.assertEqual(self.socket.auth_token, ALICE)
        self.assertEqual(self.h.events_named("authStateChange"), [({
            "oldState": "unauthenticated", "newState": "authenticated",
            "signedAuthToken": ALICE_TOKEN, "authToken": ALICE},)])
        self.assertEqual(self.h.events_named("authenticate"), [(ALICE_TOKEN,)])

    def test_set_auth_token_with_cid(self):
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}, "cid": 1})
        self.assertEqual(self.wire.sent, ['{"rid":1}'])

    def test_set_auth_token_v20_key_order(self):
        self.h.feed({"event": "#setAuthToken", "cid": 1, "data": {"token": ALICE_TOKEN}})
        self.assertEqual(self.wire.sent, ['{"rid":1}'])

    def test_set_auth_token_malformed(self):
        self.h.feed({"event": "#setAuthToken", "data": None, "cid": 3})
        self.assertEqual(json.loads(self.wire.sent[0]), {"rid": 3, "error": {
            "message": "No token data provided by #setAuthToken event", "name": "InvalidMessageError"}})
        self.assertEqual(self.socket.auth_state, "unauthenticated")

    def test_new_token_while_authenticated(self):
        bob = make_token({"username": "bob"})
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        self.h.feed({"event": "#setAuthToken", "data": {"token": bob}})
        self.assertEqual(self.socket.auth_token, {"username": "bob"})
        self.assertEqual(len(self.h.events_named("authStateChange")), 1)
        self.assertEqual(self.h.events_named("authenticate"), [(ALICE_TOKEN,), (bob,)])

    def test_remove_auth_token(self):
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        self.h.feed({"event": "#removeAuthToken", "data": None})
        self.assertEqual(self.socket.auth_state, "unauthenticated")
        self.assertIsNone(self.socket.auth_token)
        self.assertIsNone(self.socket.signed_auth_token)
        self.assertEqual(self.h.events_named("removeAuthToken"), [(ALICE_TOKEN,)])
        self.assertEqual(self.h.events_named("deauthenticate"), [(ALICE_TOKEN,)])
        self.assertEqual(self.wire.sent, [])

    def test_remove_auth_token_v20_with_cid(self):
        self.h.feed({"event": "#removeAuthToken", "cid": 4})
        self.assertEqual(self.wire.sent, ['{"rid":4}'])
        self.assertEqual(self.h.events_named("deauthenticate"), [])

    def test_authenticate(self):
        d = self.socket.authenticate(ALICE_TOKEN)
        self.assertEqual(self.wire.packets(), [{"event": "#authenticate", "data": ALICE_TOKEN, "cid": 2}])
        self.h.feed({"rid": 2, "data": {"isAuthenticated": True, "authError": None}})
        self.assertEqual(self.successResultOf(d), {"isAuthenticated": True, "authError": None})
        self.assertEqual(self.socket.auth_token, ALICE)
        self.assertEqual(self.socket.auth_state, "authenticated")

    def test_authenticate_bad_token(self):
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        d = self.socket.authenticate("garbage-token")
        self.h.feed({"event": "#removeAuthToken", "data": None})
        self.h.feed({"rid": 2, "error": {"message": "jwt malformed", "name": "AuthTokenInvalidError"},
                     "data": {"isAuthenticated": False,
                              "authError": {"message": "jwt malformed", "name": "AuthTokenInvalidError"}}})
        self.failureResultOf(d, errors.AuthTokenInvalidError)
        self.assertEqual(self.socket.auth_state, "unauthenticated")

    def test_authenticate_soft_failure(self):
        d = self.socket.authenticate("nbf-token")
        self.h.feed({"rid": 2, "data": {"isAuthenticated": False, "authError": {
            "message": "jwt not active", "name": "AuthTokenNotBeforeError", "date": "2026-01-01T00:00:00.000Z"}}})
        status = self.successResultOf(d)
        self.assertFalse(status["isAuthenticated"])
        self.assertIsInstance(status["authError"], errors.AuthTokenNotBeforeError)
        self.assertEqual(self.socket.auth_state, "unauthenticated")

    def test_authenticate_timeout_keeps_state(self):
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        d = self.socket.authenticate("other")
        self.h.reactor.advance(10)
        self.failureResultOf(d, errors.TimeoutError)
        self.assertEqual(self.socket.auth_state, "authenticated")

    def test_deauthenticate(self):
        self.h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        self.socket.deauthenticate()
        self.assertEqual(self.wire.sent, ['{"event":"#removeAuthToken"}'])
        self.assertEqual(self.socket.auth_state, "unauthenticated")
        self.assertEqual(self.h.events_named("removeAuthToken"), [(ALICE_TOKEN,)])
        self.assertEqual(self.h.events_named("deauthenticate"), [(ALICE_TOKEN,)])


class CloseTests(unittest.SynchronousTestCase):
    """Closing from either side, and the close reason."""

    def test_remote_close_v2_reason(self):
        h = Harness()
        h.connected()
        h.remote_close(4321, "custom reason")
        self.assertEqual(h.socket.state, "closed")
        self.assertIsNone(h.socket.id)
        self.assertEqual(h.events_named("disconnect"), [(4321, "custom reason")])
        self.assertEqual(h.events_named("close"), [(4321, "custom reason")])
        [err] = [e[0] for e in h.events_named("error")]
        self.assertEqual(str(err), "Socket connection closed with status code 4321 and reason: custom reason")
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_remote_close_normal(self):
        h = Harness()
        h.connected()
        h.remote_close(1000, "")
        self.assertEqual(h.events_named("disconnect"), [(1000, None)])
        self.assertEqual(h.events_named("error"), [])

    def test_disconnect_event_v1(self):
        """v1: #disconnect carries the reason; the client echoes it and closes."""
        h = Harness(protocol_version=1)
        h.connected()
        h.feed({"event": "#disconnect", "data": {"code": 4321, "data": "custom reason"}})
        self.assertEqual(h.wire.sent, ['{"event":"#disconnect","data":{"code":4321,"data":"custom reason"}}'])
        self.assertEqual(h.wire.closed, (4321, None))
        self.assertEqual(h.events_named("disconnect"), [(4321, "custom reason")])
        # The close frame that follows changes nothing.
        h.remote_close(4321, "")
        self.assertEqual(len(h.events_named("disconnect")), 1)
        self.assertEqual(len(h.events_named("close")), 1)

    def test_disconnect_event_v2(self):
        """Our server's union dialect: #disconnect then the close frame."""
        h = Harness()
        h.connected()
        h.feed({"event": "#disconnect", "data": {"code": 4600, "data": {"why": "object reason"}}})
        self.assertEqual(h.wire.sent, [])
        self.assertEqual(h.wire.closed, (4600, None))
        self.assertEqual(h.events_named("disconnect"), [(4600, {"why": "object reason"})])

    def test_client_disconnect_v1(self):
        h = Harness(protocol_version=1)
        h.connected()
        d = h.socket.disconnect(4100, "client bye")
        self.assertEqual(h.wire.sent, ['{"event":"#disconnect","data":{"code":4100,"data":"client bye"}}'])
        self.assertEqual(h.wire.closed, (4100, None))
        self.assertEqual(h.socket.state, "closed")
        self.assertEqual(h.events_named("disconnect"), [(4100, "client bye")])
        self.assertNoResult(d)
        h.remote_close(4100, "")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(h.events_named("disconnect")), 1)

    def test_client_disconnect_default(self):
        h = Harness(protocol_version=1)
        h.connected()
        h.socket.disconnect()
        self.assertEqual(h.wire.sent, ['{"event":"#disconnect","data":{"code":1000}}'])
        self.assertEqual(h.wire.closed, (1000, None))
        self.assertEqual(h.events_named("error"), [])

    def test_client_disconnect_v2(self):
        h = Harness()
        h.connected()
        d = h.socket.disconnect(4100, "client bye")
        self.assertEqual(h.wire.sent, [])
        self.assertEqual(h.wire.closed, (4100, "client bye"))
        self.assertEqual(h.events_named("disconnect"), [(4100, "client bye")])
        h.remote_close(4100, "client bye")
        self.successResultOf(d)

    def test_disconnect_closed(self):
        h = Harness()
        self.successResultOf(h.socket.disconnect())

    def test_disconnect_twice(self):
        h = Harness()
        h.connected()
        d1 = h.socket.disconnect()
        d2 = h.socket.disconnect()
        self.assertNoResult(d2)
        h.remote_close(1000)
        self.successResultOf(d1)
        self.successResultOf(d2)

    def test_disconnect_while_dialing(self):
        h = Harness()
        d = h.dial()
        self.successResultOf(h.socket.disconnect())
        self.failureResultOf(d, errors.BadConnectionError)
        self.assertTrue(h.dial_abandoned())
        self.assertEqual(h.events_named("connectAbort"), [(1000, None)])

    def test_disconnect_during_handshake(self):
        h = Harness(protocol_version=1)
        d = h.dial()
        wire = h.open()
        h.socket.disconnect()
        self.assertEqual(len(wire.sent), 1)  # no #disconnect before the handshake
        self.assertEqual(wire.closed, (1000, None))
        self.failureResultOf(d, errors.BadConnectionError)

    def test_pending_calls_fail(self):
        """In-flight calls fail with BadConnectionError after 'disconnect'."""
        h = Harness()
        h.connected()
        order = []
        h.socket.on("disconnect", lambda code, reason: order.append("disconnect"))
        d = h.socket.invoke("slow")
        d.addErrback(lambda f: order.append(f.value))
        channel = h.socket.subscribe("news")
        waiter = channel.when_subscribed()
        h.remote_close(1006, "gone")
        self.assertEqual(order[0], "disconnect")
        self.assertIsInstance(order[1], errors.BadConnectionError)
        self.assertEqual(order[1].type, "disconnect")
        self.failureResultOf(waiter, errors.BadConnectionError)
        self.assertEqual(channel.state, "pending")
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_subscriptions_suspended(self):
        h = Harness()
        h.connected()
        channel = h.socket.subscribe("news")
        h.feed({"rid": 2})
        h.remote_close(4321, "")
        self.assertEqual(h.event_names()[-4:], ["error", "unsubscribe", "disconnect", "close"])
        self.assertEqual(channel.state, "pending")

    def test_emit_after_close(self):
        h = Harness()
        h.connected()
        h.remote_close(1000)
        results = []
        h.socket.emit("x", 1, lambda err, data: results.append(err))
        self.assertIsInstance(results[0], errors.BadConnectionError)
        h.socket.emit("y")
        self.failureResultOf(h.socket.invoke("z"), errors.BadConnectionError)
        self.failureResultOf(h.socket.publish("c", 1), errors.BadConnectionError)
        self.assertEqual(h.wire.sent, [])

    def test_reconnect_by_hand_keeps_token_and_channels(self):
        h = Harness()
        h.connected()
        channel = h.socket.subscribe("news")
        h.feed({"rid": 2})
        h.feed({"event": "#setAuthToken", "data": {"token": ALICE_TOKEN}})
        h.socket.disconnect()
        h.remote_close(1000)
        d = h.dial()
        wire = h.open()
        self.assertEqual(wire.packets(), [
            {"event": "#handshake", "data": {"authToken": ALICE_TOKEN}, "cid": 3}])
        h.handshake_reply(cid=3, authenticated=True)
        self.successResultOf(d)
        self.assertEqual(wire.packets()[1], {"event": "#subscribe", "data": {"channel": "news"}, "cid": 4})
        h.feed({"rid": 4})
        self.assertEqual(channel.state, "subscribed")
        self.assertEqual(h.socket.auth_state, "authenticated")

    def test_stale_wire_ignored(self):
        h = Harness()
        h.connected()
        old = h.wire
        h.socket.disconnect()
        got = []
        h.socket.on("x", lambda data, respond: got.append(data))
        h.feed({"event": "x", "data": 1}, wire=old)
        self.assertEqual(got, [])


class ReconnectTests(unittest.SynchronousTestCase):
    """auto_reconnect."""

    def make(self, **options):
        options.setdefault("reconnect_options", {"initial_delay": 1, "randomness": 0,
                                                 "multiplier": 2, "max_delay": 5})
        h = Harness(auto_reconnect=True, **options)
        h.connected()
        return h

    def test_immediate_after_ping_timeout(self):
        h = self.make()
        h.remote_close(4001, "")
        self.assertTrue(h.socket.pending_reconnect)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        h.reactor.advance(0)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        self.assertEqual(h.socket.state, "connecting")

    def test_backoff(self):
        h = self.make()
        h.remote_close(1006, "")
        h.reactor.advance(0.9)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        h.reactor.advance(0.1)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        # The attempt fails: the next delay doubles, then reaches max_delay.
        h.refuse()
        h.reactor.advance(1.9)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        h.reactor.advance(0.1)
        self.assertEqual(len(h.reactor.tcpClients), 3)
        h.refuse()
        h.reactor.advance(4)
        self.assertEqual(len(h.reactor.tcpClients), 4)
        h.refuse()
        h.reactor.advance(5)
        self.assertEqual(len(h.reactor.tcpClients), 5)

    def test_no_reconnect_after_1000_or_4500(self):
        for code in (1000, 4500, 4999):
            h = self.make()
            h.remote_close(code, "")
            self.assertFalse(h.socket.pending_reconnect)
            self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_no_reconnect_after_disconnect(self):
        h = self.make()
        h.socket.disconnect(4100)
        h.remote_close(4100)
        self.assertFalse(h.socket.pending_reconnect)

    def test_disconnect_cancels_reconnect(self):
        h = self.make()
        h.remote_close(1006, "")
        self.successResultOf(h.socket.disconnect())
        self.assertFalse(h.socket.pending_reconnect)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_resubscribe_and_flush(self):
        h = self.make()
        channel = h.socket.subscribe("news")
        h.feed({"rid": 2})
        h.remote_close(4000, "")
        self.assertEqual(channel.state, "pending")
        h.socket.emit("queued", 1)
        d = h.socket.invoke("queuedCall")
        h.reactor.advance(0)
        connects = []
        h.socket.on("connect", lambda status: connects.append(len(wire.sent)))
        wire = h.open()
        h.handshake_reply(cid=4)
        self.assertEqual(wire.packets(), [
            {"event": "#handshake", "data": {"authToken": None}, "cid": 4},
            {"event": "#subscribe", "data": {"channel": "news"}, "cid": 5},
            {"event": "queued", "data": 1},
            {"event": "queuedCall", "cid": 3},
        ])
        # Subscriptions go out before 'connect', buffered emits after it.
        self.assertEqual(connects, [2])
        h.feed({"rid": 5})
        self.assertEqual(channel.state, "subscribed")
        h.feed({"rid": 3, "data": "ok"})
        self.assertEqual(self.successResultOf(d), "ok")

    def test_buffered_call_times_out(self):
        h = self.make()
        h.remote_close(1006, "")
        d = h.socket.invoke("x")
        h.reactor.advance(10)
        self.failureResultOf(d, errors.TimeoutError)

    def test_connect_waits_through_retries(self):
        h = Harness(auto_reconnect=True, reconnect_options={"initial_delay": 1, "randomness": 0})
        d = h.dial()
        h.refuse()
        self.assertNoResult(d)
        h.reactor.advance(1)
        h.open()
        h.handshake_reply()
        self.assertIs(self.successResultOf(d), h.socket)
        self.assertEqual(h.socket.connect_attempts, 0)

    def test_connect_fails_on_permanent_rejection(self):
        h = Harness(auto_reconnect=True)
        d = h.dial()
        h.open()
        h.feed({"rid": 1, "error": {"message": "no", "name": "Rejected", "statusCode": 4555}})
        self.assertEqual(self.failureResultOf(d, errors.RemoteError).value.name, "Rejected")
        self.assertFalse(h.socket.pending_reconnect)


class ConnectFunctionTests(unittest.SynchronousTestCase):
    """The module-level connect()."""

    def test_connect(self):
        """connect() passes the options on, and fires with the socket."""
        server = RawServer(Clock())
        network = MemoryNetwork(server)
        d = connect(URL, reactor=network.reactor, protocol_version=1, ack_timeout=3,
                    auto_reconnect=False)
        network.flush()
        [peer] = server.protocols
        self.assertEqual(peer.messages, ['{"event":"#handshake","data":{"authToken":null},"cid":1}'])
        # protocol_version=1: the client answers '#1' with '#2'.
        peer.send("#1")
        network.flush()
        self.assertEqual(peer.messages[1:], ["#2"])
        peer.send(b'{"rid":1,"data":{"id":"x","pingTimeout":20000,"isAuthenticated":false}}', binary=False)
        network.flush()
        socket = self.successResultOf(d)
        self.assertIsInstance(socket, SCClientSocket)
        self.assertEqual((socket.protocol_version, socket.ack_timeout), (1, 3))


# -- the autobahn adapter over a StringTransport -----------------------------

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(payload, opcode=1):
    """An unmasked frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def client_frames(data):
    """Parse the masked frames a client sent: a list of (opcode, payload)."""
    frames = []
    while data:
        b0, b1 = data[0], data[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            n = struct.unpack("!H", data[2:4])[0]
            pos = 4
        elif n == 127:
            n = struct.unpack("!Q", data[2:10])[0]
            pos = 10
        mask = data[pos:pos + 4]
        pos += 4
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(data[pos:pos + n]))
        frames.append((b0 & 0x0F, payload))
        data = data[pos + n:]
    return frames


class LenientStringTransport(StringTransport):
    """A StringTransport that, like real transports, lets autobahn unregister no producer."""

    def unregisterProducer(self):
        self.producer = None


class AdapterTests(unittest.SynchronousTestCase):
    """The real autobahn protocol, over a StringTransport."""

    def open(self, **options):
        options.setdefault("auto_reconnect", False)
        self.reactor = MemoryReactorClock()
        self.socket = SCClientSocket(URL, reactor=self.reactor, **options)
        self.events = []
        self.socket.on("disconnect", lambda *a: self.events.append(("disconnect",) + a))
        self.d = self.socket.connect()
        factory = self.reactor.tcpClients[0][2]
        self.proto = factory.buildProtocol(None)
        self.transport = LenientStringTransport()
        self.proto.makeConnection(self.transport)
        request = self.transport.value().decode("latin-1")
        self.assertTrue(request.startswith("GET /socketcluster/ HTTP/1.1\r\n"))
        key = re.search(r"Sec-WebSocket-Key: (\S+)", request).group(1)
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        self.transport.clear()
        self.proto.dataReceived((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: {}\r\n\r\n".format(accept)).encode("latin-1"))

    def sent(self):
        frames = client_frames(self.transport.value())
        self.transport.clear()
        return frames

    def test_handshake_and_ping(self):
        self.open()
        self.assertEqual(self.sent(), [(1, b'{"event":"#handshake","data":{"authToken":null},"cid":1}')])
        self.proto.dataReceived(server_frame(
            b'{"rid":1,"data":{"id":"abc","pingTimeout":20000,"isAuthenticated":false}}'))
        self.assertIs(self.successResultOf(self.d), self.socket)
        self.proto.dataReceived(server_frame(b""))
        self.assertEqual(self.sent(), [(1, b"")])
        self.socket.emit("chat", "hi")
        self.assertEqual(self.sent(), [(1, b'{"event":"chat","data":"hi"}')])

    def test_server_close_with_reason(self):
        self.open()
        self.proto.dataReceived(server_frame(
            b'{"rid":1,"data":{"id":"abc","pingTimeout":20000,"isAuthenticated":false}}'))
        self.sent()
        self.proto.dataReceived(server_frame(struct.pack("!H", 4321) + b"custom reason", opcode=8))
        # The client echoes the code and reason.
        self.assertEqual(self.sent(), [(8, struct.pack("!H", 4321) + b"custom reason")])
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(self.events, [("disconnect", 4321, "custom reason")])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_client_disconnect_and_drop_timer(self):
        self.open()
        self.proto.dataReceived(server_frame(
            b'{"rid":1,"data":{"id":"abc","pingTimeout":20000,"isAuthenticated":false}}'))
        self.sent()
        d = self.socket.disconnect(4100, "client bye")
        self.assertEqual(self.sent(), [(8, struct.pack("!H", 4100) + b"client bye")])
        self.assertEqual(self.events, [("disconnect", 4100, "client bye")])
        # The server never answers: the connection is dropped.
        self.reactor.advance(2)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)
        self.proto.connectionLost(Failure(ierror.ConnectionLost()))
        self.successResultOf(d)
        self.assertEqual(len(self.events), 1)

    def test_binary_codec_frames(self):
        self.open(codec_engine=MinBinCodec())
        [(opcode, payload)] = self.sent()
        self.assertEqual(opcode, 2)
        self.assertEqual(MinBinCodec().decode(payload)["event"], "#handshake")


# -- loopback against a tiny fake server ----------------------------------------


class FakeServerProtocol(WebSocketServerProtocol):
    """Answers the handshake, 'echo', and closes on 'bye'."""

    def onOpen(self):
        self.factory.protocols.append(self)
        self.closed = defer.Deferred()

    def onMessage(self, payload, isBinary):
        packet = json.loads(payload.decode("utf-8"))
        event = packet.get("event")
        if event == "#handshake":
            self.reply(packet["cid"], {"id": "fake-id", "pingTimeout": 20000,
                                       "isAuthenticated": False})
        elif event == "echo":
            self.reply(packet["cid"], packet.get("data"))
        elif event == "bye":
            self.sendClose(4321, "custom reason")

    def reply(self, cid, data):
        self.sendMessage(json.dumps({"rid": cid, "data": data}).encode("utf-8"))

    def onClose(self, wasClean, code, reason):
        if hasattr(self, "closed"):
            self.closed.callback((code, reason))


def self_signed():
    """A self-signed certificate for localhost: (key PEM, cert PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class MemoryServerTests(unittest.SynchronousTestCase):
    """
    The client against a real L{scserver.SCServer} in memory, over TCP and
    TLS (the same TLS layer as a real C{connectSSL}: certificates are
    checked), through a L{MemoryNetwork}.
    """

    def make_network(self, tls=False):
        server = make_server()
        self.server_closes = []

        def on_connection(socket, status):
            socket.on("echo", lambda data, respond: respond(None, data))
            socket.on("bye", lambda data, respond: socket.disconnect(4321, "custom reason"))
            socket.on("close", lambda code, reason: self.server_closes.append((code, reason)))

        server.on("connection", on_connection)
        options = None
        if tls:
            from twisted.internet import ssl

            key_pem, cert_pem = self_signed()
            self.cert_pem = cert_pem
            options = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
        self.network = MemoryNetwork(server, tls=options)
        return self.network

    def roundtrip(self, url, **options):
        network = self.network
        d = connect(url, reactor=network.reactor, auto_reconnect=False, **options)
        network.flush()
        socket = self.successResultOf(d)
        self.assertEqual(socket.state, "open")
        self.assertIn(socket.id, network.server.clients)
        reply = socket.invoke("echo", {"hello": ["world", 1]})
        network.flush()
        self.assertEqual(self.successResultOf(reply), {"hello": ["world", 1]})
        closed = socket.disconnect()
        network.flush()
        self.successResultOf(closed)
        self.assertEqual(socket.state, "closed")
        self.assertEqual(self.server_closes, [(1000, None)])
        self.assertEqual(network.reactor.getDelayedCalls(), [])

    def test_ws(self):
        self.make_network()
        self.roundtrip("ws://127.0.0.1:8000/socketcluster/")
        self.assertEqual(len(self.network.reactor.tcpClients), 1)

    def test_wss(self):
        from twisted.internet import ssl

        self.make_network(tls=True)
        self.roundtrip("wss://localhost:8443/socketcluster/", ssl_context_factory=ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(self.cert_pem)))
        [connection] = self.network.connections
        self.assertTrue(connection.tls)
        self.assertEqual(self.network.reactor.tcpClients, [])

    def test_wss_without_verification(self):
        from twisted.internet import ssl

        self.make_network(tls=True)
        self.roundtrip("wss://127.0.0.1:8443/socketcluster/",
                       ssl_context_factory=ssl.CertificateOptions())

    def test_wss_untrusted(self):
        """The default TLS options check the certificate: a self-signed one fails."""
        network = self.make_network(tls=True)
        d = connect("wss://localhost:8443/socketcluster/", reactor=network.reactor,
                    auto_reconnect=False)
        network.flush()
        failure = self.failureResultOf(d, errors.BadConnectionError)
        self.assertEqual(failure.value.code, 1006)
        self.assertEqual(network.server.clients, {})
        self.flushLoggedErrors()

    def test_server_close_reason(self):
        network = self.make_network()
        d = connect("ws://127.0.0.1:8000/socketcluster/", reactor=network.reactor,
                    auto_reconnect=False)
        network.flush()
        socket = self.successResultOf(d)
        closes = []
        socket.on("close", lambda code, reason: closes.append((code, reason)))
        socket.emit("bye")
        network.flush()
        self.assertEqual(closes, [(4321, "custom reason")])
        self.assertEqual(self.server_closes, [(4321, "custom reason")])
        self.assertTrue(network.connections[0].closed)

    def test_refused(self):
        """Nothing listens (the server was closed): 1006."""
        network = self.make_network()
        self.successResultOf(network.server.close())
        d = connect("ws://127.0.0.1:8000/socketcluster/", reactor=network.reactor,
                    auto_reconnect=False)
        network.flush()
        failure = self.failureResultOf(d, errors.BadConnectionError)
        self.assertEqual(failure.value.code, 1006)
        self.assertEqual(network.connections, [])


class LoopbackTests(unittest.TestCase):
    """
    One real socket: C{wss://} through the global reactor's C{connectSSL},
    to a tiny fake SocketCluster server on 127.0.0.1.  The rest runs in
    memory (L{MemoryServerTests}); this one checks that what the client
    gives the real reactor (the context, the timeout) makes a verified TLS
    connection there too.
    """

    def listen(self, context):
        from twisted.internet import reactor

        self.server = WebSocketServerFactory(reactor=reactor)
        self.server.protocol = FakeServerProtocol
        self.server.protocols = []
        self.server.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        port = reactor.listenSSL(0, self.server, context, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_wss(self):
        from twisted.internet import reactor, ssl

        key_pem, cert_pem = self_signed()
        port = self.listen(ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options())
        client_context = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem))
        socket = yield connect("wss://localhost:{}/socketcluster/".format(port), reactor=reactor,
                               ssl_context_factory=client_context, auto_reconnect=False)
        self.assertEqual((socket.state, socket.id), ("open", "fake-id"))
        reply = yield socket.invoke("echo", {"hello": ["world", 1]})
        self.assertEqual(reply, {"hello": ["world", 1]})
        yield socket.disconnect()
        self.assertEqual(socket.state, "closed")
        code, _reason = yield self.server.protocols[0].closed
        self.assertEqual(code, 1000)
