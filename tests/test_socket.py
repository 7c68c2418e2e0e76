"""
Tests for L{scserver.socket.SCServerSocket} through L{scserver.testing}, on a
L{twisted.internet.task.Clock}: the recorded v14 transcripts reproduced
frame by frame (byte for byte, socket ids aside), and the handler semantics
of the API (C{respond}, return values, C{invoke}, events, registries).
"""

import base64
import json

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scserver import SCServer, SCServerSocket, errors
from scserver.codec import MinBinCodec
from scserver.socket import RESERVED_EVENTS
from scserver.testing import (
    FakeConnection,
    NotAnswered,
    RecordingOutput,
    connect,
    make_server,
)
from tests._transcripts import advance_until, frames, load_transcript

TRANSCRIPT_KEY = "golden-transcript-secret"


class CustomError(errors.SCError):
    """
    An application error with a name and public fields (v14/02).  It
    subclasses the package's SocketCluster error, as an application's own
    errors do, so that it reaches the client raised as well as passed to
    C{respond} (any other exception raised is kept from the client).
    """

    def __init__(self, message):
        errors.SCError.__init__(self, message)
        self.name = "CustomError"
        self.code = 4242
        self.details = {"field": "amount", "reason": "negative"}


class PartialError(Exception):
    """An application error whose name is a class attribute."""

    name = "PartialError"


def jwt_segment(token, index):
    """Decode one segment of a JWT as JSON."""
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class SocketTestCase(SynchronousTestCase):
    """A server on a L{Clock}, with the options of the v14 recordings."""

    server_options = {}

    def setUp(self):
        options = dict(ping_interval=10, ping_timeout=20, ack_timeout=2,
                       handshake_timeout=10, auth_key=TRANSCRIPT_KEY)
        options.update(self.server_options)
        self.clock = Clock()
        self.server = make_server(self.clock, **options)
        self.warnings = []
        self.server.on("warning", self.warnings.append)

    def connect(self, **kwargs):
        return connect(self.server, **kwargs)

    def open(self, **kwargs):
        """A connection past the handshake, with nothing recorded yet."""
        conn = self.connect(**kwargs)
        conn.handshake()
        conn.pop_sent()
        return conn

    def replay(self, conn, transcript, label="c0", actions=None, close_reason=True):
        """
        Reproduce the frames of connection C{label} of C{transcript} on
        C{conn}: feed every inbound frame; check every outbound frame byte
        for byte (with the recorded socket id replaced by C{conn}'s),
        advancing the clock while the server has not sent it yet.

        @param actions: outbound frame (as recorded) → a callable run just
            before that frame is expected (the server-side action that
            caused it).
        @param close_reason: whether to compare the reason of the server's
            close frame too.
        """
        actions = dict(actions or {})
        steps = frames(load_transcript(transcript), label)
        recorded_id = None
        for direction, payload in steps:
            if direction == "out" and '"data":{"id":"' in payload and payload.startswith('{"rid"'):
                recorded_id = json.loads(payload)["data"]["id"]
                break
        seen = 0
        for index, (direction, payload) in enumerate(steps):
            where = "{} {} frame {}: {} {!r}".format(transcript, label, index, direction, payload)
            if direction == "in":
                self.assertEqual(conn.payloads[seen:], [], where)
                conn.send_raw(payload)
            elif direction == "out":
                action = actions.pop(payload, None)
                if action is not None:
                    action()
                advance_until(self, self.clock,
                              lambda: len(conn.payloads) > seen or conn.closed is not None)
                expected = payload
                if recorded_id is not None:
                    expected = expected.replace(recorded_id, conn.socket.id)
                self.assertGreater(len(conn.payloads), seen, where)
                self.assertEqual(conn.payloads[seen], expected, where)
                seen += 1
            elif direction == "close-out":
                if conn.closed is None and conn.state == SCServerSocket.CLOSED:
                    continue  # the transport's answer to the client's close
                advance_until(self, self.clock,
                              lambda: conn.closed is not None or len(conn.payloads) > seen)
                self.assertEqual(conn.payloads[seen:], [], where)
                self.assertIsNotNone(conn.closed, where)
                self.assertEqual(conn.closed[0], payload[0], where)
                if close_reason:
                    self.assertEqual(conn.closed[1], payload[1], where)
            elif direction == "close-in":
                if conn.state != SCServerSocket.CLOSED:
                    conn.lose_connection(*payload)
        self.assertEqual(conn.payloads[seen:], [])
        self.assertEqual(actions, {}, "actions never used")


class TranscriptTests(SocketTestCase):
    """The v14 recordings, reproduced."""

    def test_handshake_ping(self):
        """Handshake, three C{#1}/C{#2} cycles, client disconnect (v14/01)."""
        self.server = make_server(self.clock, protocol_version=1, ping_interval=0.25,
                                  ping_timeout=1, auth_key=TRANSCRIPT_KEY)
        conn = self.connect()
        self.replay(conn, "v14/01-handshake-ping")
        self.assertEqual(conn.socket.protocol_version, 1)
        self.assertEqual(conn.closed, (1000, ""))

    def _emit_ack_handlers(self, socket):
        received = self.received = []
        socket.on("echo", lambda data, respond: respond(
            None, {"echoed": "(undefined)" if data is None else data}))
        socket.on("ackNoData", lambda data, respond: respond())
        socket.on("fail", lambda data, respond: respond(CustomError("Something bad happened")))
        socket.on("failWithData", lambda data, respond: respond(
            PartialError("Partial failure"), {"partial": True}))
        socket.on("failPlain", lambda data, respond: respond(
            Exception("plain Error, name not assigned")))
        socket.on("failString", lambda data, respond: respond("plain string error"))
        socket.on("failTrue", lambda data, respond: respond(True))
        socket.on("noack", lambda data, respond: received.append(data))

    def test_emit_ack(self):
        """
        Every reply of v14/02, byte for byte: data, no data, custom errors
        with fields, error with data, a plain Exception, a string, C{true};
        no reply without cid or without handler.
        """
        self.server.on("connection", lambda socket, status: self._emit_ack_handlers(socket))
        conn = self.connect()
        self.replay(conn, "v14/02-emit-ack")
        self.assertEqual(self.received, [{"fire": "and forget"}])

    def test_emit_ack_return_values(self):
        """
        The v14/02 replies produced by handlers that return values,
        Deferreds or coroutines, or raise.  (v14 sent the message of any
        Error; here a handler's failure that is not a SocketCluster error
        is kept from the client, so the plain failure is one the handler
        hands to C{respond} on purpose.)
        """
        def setup(socket, status):
            async def echo(data, respond):
                return {"echoed": "(undefined)" if data is None else data}

            def fail(data, respond):
                raise CustomError("Something bad happened")

            def fail_plain(data, respond):
                d = Deferred()
                self.clock.callLater(0.5, d.callback, None)
                return d.addCallback(
                    lambda _: respond(Exception("plain Error, name not assigned")))

            socket.on("echo", echo)
            socket.on("ackNoData", lambda data, respond: respond())
            socket.on("fail", fail)
            socket.on("failWithData", lambda data, respond: respond(
                PartialError("Partial failure"), {"partial": True}))
            socket.on("failPlain", fail_plain)
            socket.on("failString", lambda data, respond: respond("plain string error"))
            socket.on("failTrue", lambda data, respond: respond(True))
            socket.on("noack", lambda data, respond: "ignored: no cid")

        self.server.on("connection", setup)
        self.replay(self.connect(), "v14/02-emit-ack")
        self.assertEqual(self.warnings, [])

    def test_server_emit(self):
        """
        Events emitted in the C{connection} handler go out before the
        handshake reply, with server cids from 1; the client's replies
        reach the callbacks, errors hydrated (v14/03).
        """
        results = []

        def connection(socket, status):
            socket.emit("srvNoAck", {"a": 1})
            socket.emit("srvNoData")
            socket.emit("srvAck", {"b": 2}, lambda e, d: results.append(("srvAck", e, d)))
            socket.emit("srvAckErr", {"c": 3}, lambda e, d: results.append(("srvAckErr", e, d)))

        self.server.on("connection", connection)
        self.replay(self.connect(), "v14/03-server-emit")
        self.assertEqual(results[0], ("srvAck", None, {"got": {"b": 2}}))
        name, error, data = results[1]
        self.assertEqual(error.name, "ClientRefusalError")
        self.assertEqual(error.message, "client refuses")
        self.assertEqual(error.extra, 42)
        self.assertEqual(len(results), 2)

    def test_pubsub(self):
        """
        Subscribe, publish with ack (delivery to the publisher before the
        ack), publish without ack, a server publication, subscribe with
        data, bare-string unsubscribe without cid (v14/04).
        """
        subscriptions = []
        self.server.on("subscription", lambda s, channel, options: subscriptions.append(
            (channel, options)))
        conn = self.connect()
        publish = lambda: self.server.exchange.publish("news", {"from": "server"})
        self.replay(conn, "v14/04-pubsub", actions={
            '{"event":"#publish","data":{"channel":"news","data":{"from":"server"}}}': publish})
        self.assertEqual(subscriptions, [("news", {"channel": "news"}),
                                         ("room", {"channel": "room",
                                                   "data": {"roomKey": "abc"}})])
        self.assertEqual(conn.socket.subscriptions(), [])

    def test_pubsub_state(self):
        """After the v14/04 frames, the socket is subscribed to C{room} only."""
        conn = self.connect()
        steps = [p for d, p in frames(load_transcript("v14/04-pubsub")) if d == "in"]
        for payload in steps[:-1]:
            conn.send_raw(payload)
        self.assertEqual(conn.socket.subscriptions(), ["room"])
        self.assertTrue(conn.socket.is_subscribed("room"))
        self.assertFalse(conn.socket.is_subscribed("news"))

    def test_kick_out(self):
        """
        C{kick_out(channel, message)} and C{kick_out()} send v14's
        C{#kickOut} frames; the socket is unsubscribed (v14/11).
        """
        conn = self.connect()
        sockets = []
        self.server.on("connection", lambda socket, status: sockets.append(socket))
        self.replay(conn, "v14/11-kickout", actions={
            '{"event":"#kickOut","data":{"message":"You are kicked","channel":"news"}}':
                lambda: sockets[0].kick_out("news", "You are kicked"),
            '{"event":"#kickOut","data":{"channel":"sports"}}':
                lambda: sockets[0].kick_out(),
        })
        self.assertEqual(conn.socket.subscriptions(), [])
        self.assertEqual(self.server.exchange._sockets, {})

    def test_kick_out_stops_delivery(self):
        """A kicked-out socket gets no more publications of that channel."""
        conn = self.open()
        conn.subscribe("news")
        conn.subscribe("sports")
        conn.socket.kick_out("news")
        conn.pop_sent()
        self.server.exchange.publish("news", 1)
        self.server.exchange.publish("sports", 2)
        self.assertEqual(conn.pop_sent(), [
            {"event": "#publish", "data": {"channel": "sports", "data": 2}}])

    def test_server_disconnect(self):
        """
        C{socket.disconnect(code, reason)}: C{#disconnect} with the code and
        the reason, then the close frame (v14/12); a late client frame is
        ignored.  The close frame also carries a text reason (union dialect).
        """
        cases = {"c0": (4321, "custom reason"), "c1": (), "c2": (4600, {"why": "object reason",
                                                                           "n": 1})}
        for label, args in sorted(cases.items()):
            conn = self.connect()
            transcript = load_transcript("v14/12-server-disconnect")
            disconnect_frame = [p for d, p in frames(transcript, label) if d == "out"][1]
            self.replay(conn, "v14/12-server-disconnect", label, close_reason=False, actions={
                disconnect_frame: lambda: conn.socket.disconnect(*args)})
            reason = args[1] if args and isinstance(args[1], str) else ""
            self.assertEqual(conn.closed, (args[0] if args else 1000, reason))

    def test_client_disconnect(self):
        """The client's C{#disconnect} closes with its code (v14/13)."""
        events = []
        self.server.on("disconnection", lambda s, code, reason: events.append((code, reason)))
        for label in ("c0", "c1"):
            self.replay(self.connect(), "v14/13-client-disconnect", label, close_reason=False)
        self.assertEqual(events, [(4100, "client bye"), (1000, None)])

    def test_handshake_timeout(self):
        """No handshake: C{#disconnect} 4005 and CLOSE 4005 (v14/14)."""
        self.server = make_server(self.clock, handshake_timeout=0.5, auth_key=TRANSCRIPT_KEY)
        aborts = []
        self.server.on("connectionAbort", lambda s, code, reason: aborts.append(code))
        conn = self.connect()
        self.replay(conn, "v14/14-handshake-timeout")
        self.assertEqual(aborts, [4005])
        self.assertEqual(self.server.pending_clients_count, 0)

    def test_strict_handshake(self):
        """
        A first frame that is not C{#handshake} closes 4009 at once;
        C{#handshake} without cid opens the socket without a reply (v14/15).
        """
        connections = []
        self.server.on("connection", lambda socket, status: connections.append(socket))
        for label in ("c0", "c1", "c2", "c3"):
            conn = self.connect()
            self.replay(conn, "v14/15-strict-handshake-violations", label)
        self.assertEqual(len(connections), 1)

    def test_ping_timeout(self):
        """A client that never pongs: C{#1} three times, CLOSE 4001 (v14/16)."""
        self.server = make_server(self.clock, protocol_version=1, ping_interval=0.2,
                                  ping_timeout=0.7, auth_key=TRANSCRIPT_KEY)
        errors_seen = []
        conn = self.connect()
        conn.socket.on("error", errors_seen.append)
        self.replay(conn, "v14/16-ping-timeout")
        self.assertEqual([type(e) for e in errors_seen], [errors.SocketProtocolError])
        self.assertEqual(errors_seen[0].code, 4001)
        self.assertEqual(str(errors_seen[0]), "Client pong timed out")

    def test_raw_misc(self):
        """
        The raw client's odd inputs after the handshake: C{#1}, C{#2},
        text, a batch, an unknown rid, bare-string and cid-less subscribes,
        unsubscribes with cid, an unsubscribe error, a second handshake, a
        string cid (v14/16b).
        """
        raw = []

        def connection(socket, status):
            socket.on("raw", raw.append)
            socket.on("e1", lambda data, respond: respond(None, "r1:" + json.dumps(data)))
            socket.on("e2", lambda data, respond: respond(None, "r2:" + json.dumps(data)))

        self.server.on("connection", connection)
        conn = self.connect()
        publish = self.server.exchange.publish
        self.replay(conn, "v14/16b-raw-misc", actions={
            '{"event":"#publish","data":{"channel":"noCidChan","data":"x"}}':
                lambda: publish("noCidChan", "x"),
            '{"event":"#publish","data":{"channel":"strChan","data":"y"}}':
                lambda: publish("strChan", "y"),
        })
        self.assertEqual(raw, ["#1", "hello raw text"])

    def test_binary(self):
        """
        Bytes in data go out as C{{"base64":true,...}}; inbound base64
        wrappers reach the handler as they are; a handshake in a binary
        frame is answered with text frames (v14/17).
        """
        received = []

        def connection(socket, status):
            socket.emit("srvBin", b"\x00\x01\x02\xfd\xfe\xff")

            def binary(data, respond):
                received.append(data)
                return {"back": b"server bytes \x00\xff"}

            socket.on("bin", binary)

        self.server.on("connection", connection)
        self.replay(self.connect(), "v14/17-binary", "c0")
        self.replay(self.connect(), "v14/17-binary", "c1")
        self.assertEqual(received, [{"buf": {"base64": True, "data": "AQID/w=="},
                                     "ab": {"base64": True, "data": "CQgH"}}])

    def test_batching(self):
        """
        With C{pub_sub_batch_duration}, the replies to batch subscribes go
        out as one array after the duration; publications and publish acks
        are never batched (v14/18).
        """
        self.server = make_server(self.clock, pub_sub_batch_duration=0.1,
                                  auth_key=TRANSCRIPT_KEY)
        publish = self.server.exchange.publish

        def burst():
            for i in range(5):
                publish("b1", {"i": i})

        conn = self.connect()
        self.replay(conn, "v14/18-batching", actions={
            '{"event":"#publish","data":{"channel":"b1","data":{"i":0}}}': burst})
        self.assertEqual(self.clock.seconds(), 0.1)

    def test_batching_state(self):
        """The batched unsubscribes of v14/18 unsubscribe without replies."""
        self.server = make_server(self.clock, pub_sub_batch_duration=0.1,
                                  auth_key=TRANSCRIPT_KEY)
        conn = self.connect()
        inbound = [p for d, p in frames(load_transcript("v14/18-batching")) if d == "in"]
        conn.send_raw(inbound[0])
        conn.send_raw(inbound[1])
        self.clock.advance(0.1)
        self.assertEqual(sorted(conn.socket.subscriptions()), ["b1", "b2", "b3"])
        conn.pop_sent()
        conn.send_raw(inbound[-2])
        self.clock.advance(1)
        self.assertEqual(conn.socket.subscriptions(), ["b1"])
        self.assertEqual(conn.pop_sent(), [])

    def test_set_auth_token(self):
        """
        C{set_auth_token} sends C{#setAuthToken} without a cid; at the
        recorded time with the recorded key the JWT is the recorded one,
        byte for byte (v14/08).
        """
        steps = frames(load_transcript("v14/08-auth-settoken-reconnect"), "c0")
        expected = steps[3][1]
        self.assertTrue(expected.startswith('{"event":"#setAuthToken"'))
        token = json.loads(expected)["data"]["token"]
        self.clock.advance(jwt_segment(token, 1)["iat"])
        results = []

        def login(data, respond):
            socket = conn.socket
            socket.set_auth_token(data).addCallback(results.append)
            respond(None, "logged-in")

        conn = self.connect()
        conn.socket.on("login", login)
        conn.send_raw(steps[0][1])
        self.assertEqual(conn.pop_sent(raw=True)[0], steps[1][1].replace(
            json.loads(steps[1][1])["data"]["id"], conn.socket.id))
        conn.send_raw(steps[2][1])
        self.assertEqual(conn.pop_sent(raw=True), [expected, steps[4][1]])
        self.assertEqual(results, [token])
        self.assertEqual(conn.socket.auth_state, SCServerSocket.AUTHENTICATED)
        self.assertEqual(conn.socket.auth_token, jwt_segment(token, 1))
        self.assertEqual(conn.socket.signed_auth_token, token)

    def test_handshake_with_token(self):
        """
        A handshake with a valid token is authenticated; the reply echoes
        the client's cid (v14/08, c1).
        """
        steps = frames(load_transcript("v14/08-auth-settoken-reconnect"), "c1")
        token = json.loads(steps[0][1])["data"]["authToken"]
        self.clock.advance(jwt_segment(token, 1)["iat"] + 1)
        conn = self.connect()
        self.replay(conn, "v14/08-auth-settoken-reconnect", "c1", close_reason=False)
        self.assertEqual(conn.socket.auth_token["username"], "alice")


class HandlerTests(SocketTestCase):
    """Client events: C{respond}, return values, no handler, reserved names."""

    def setUp(self):
        SocketTestCase.setUp(self)
        self.conn = self.open()
        self.socket = self.conn.socket

    def test_respond_data(self):
        """C{respond(None, data)} replies with the data."""
        self.socket.on("e", lambda data, respond: respond(None, [data, data]))
        self.assertEqual(self.successResultOf(self.conn.invoke("e", 1)), [1, 1])

    def test_respond_error_and_data(self):
        """C{respond(error, data)} sends both."""
        self.socket.on("e", lambda data, respond: respond(CustomError("bad"), 7))
        cid = self.conn.emit("e", 1, cid=True)
        self.assertEqual(self.conn.pop_sent(raw=True), [
            '{"rid":%d,"error":{"message":"bad","name":"CustomError","code":4242,'
            '"details":{"field":"amount","reason":"negative"}},"data":7}' % (cid,)])

    def test_second_respond_is_a_warning(self):
        """
        A second C{respond} sends nothing and emits a C{'warning'} with an
        C{InvalidActionError}.
        """
        def handler(data, respond):
            respond(None, 1)
            respond(None, 2)

        self.socket.on("e", handler)
        cid = self.conn.emit("e", None, cid=True)
        self.assertEqual(self.conn.pop_sent(), [{"rid": cid, "data": 1}])
        self.assertEqual(len(self.warnings), 1)
        self.assertIsInstance(self.warnings[0], errors.InvalidActionError)

    def test_return_value(self):
        """A returned value is the reply."""
        self.socket.on("e", lambda data, respond: {"got": data})
        self.assertEqual(self.successResultOf(self.conn.invoke("e", 3)), {"got": 3})

    def test_return_false_and_zero(self):
        """Falsy values other than None are replies too."""
        for value in (False, 0, "", [], {}):
            self.socket.off("e")
            self.socket.on("e", lambda data, respond, value=value: value)
            cid = self.conn.emit("e", None, cid=True)
            reply = self.conn.reply_to(cid)
            self.assertIsNotNone(reply, repr(value))
            self.assertNotIn("error", reply)

    def test_return_deferred(self):
        """A returned Deferred's result is the reply, when it fires."""
        d = Deferred()
        self.socket.on("e", lambda data, respond: d)
        result = self.conn.invoke("e")
        self.assertNoResult(result)
        d.callback("later")
        self.assertEqual(self.successResultOf(result), "later")

    def test_return_coroutine(self):
        """A coroutine's result is the reply."""
        d = Deferred()

        async def handler(data, respond):
            value = await d
            return value + data

        self.socket.on("e", handler)
        result = self.conn.invoke("e", 1)
        self.assertNoResult(result)
        d.callback(41)
        self.assertEqual(self.successResultOf(result), 42)

    def test_raise(self):
        """An exception raised by the handler is the error reply."""
        def handler(data, respond):
            raise errors.InvalidArgumentsError("wrong")

        self.socket.on("e", handler)
        failure = self.failureResultOf(self.conn.invoke("e"), errors.InvalidArgumentsError)
        self.assertEqual(failure.value.message, "wrong")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failing_deferred(self):
        """
        A Deferred failing with an unexpected exception (a bug): the client
        gets the generic error, nothing of the cause; the traceback is
        logged.
        """
        self.socket.on("e", lambda data, respond: succeed(None).addCallback(
            lambda _: 1 / 0))
        failure = self.failureResultOf(self.conn.invoke("e"), errors.UnknownError)
        self.assertEqual(failure.value.message, "Server error")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failing_coroutine(self):
        """A failing coroutine is the error reply."""
        async def handler(data, respond):
            raise CustomError("async bad")

        self.socket.on("e", handler)
        failure = self.failureResultOf(self.conn.invoke("e"))
        self.assertEqual(failure.value.name, "CustomError")
        self.assertEqual(failure.value.code, 4242)

    def test_respond_then_return(self):
        """When the handler responded, its return value is not sent."""
        def handler(data, respond):
            respond(None, "first")
            return "second"

        self.socket.on("e", handler)
        cid = self.conn.emit("e", None, cid=True)
        self.assertEqual(self.conn.pop_sent(), [{"rid": cid, "data": "first"}])
        self.assertEqual(self.warnings, [])

    def test_respond_before_deferred_fires(self):
        """A Deferred result after C{respond} is ignored."""
        d = Deferred()

        def handler(data, respond):
            respond(None, "now")
            return d

        self.socket.on("e", handler)
        cid = self.conn.emit("e", None, cid=True)
        d.callback("later")
        self.assertEqual(self.conn.pop_sent(), [{"rid": cid, "data": "now"}])

    def test_return_none_leaves_reply_to_respond(self):
        """Returning None sends nothing; a later C{respond} replies."""
        responders = []
        self.socket.on("e", lambda data, respond: responders.append(respond))
        cid = self.conn.emit("e", None, cid=True)
        self.assertEqual(self.conn.pop_sent(), [])
        self.clock.advance(1)
        responders[0](None, "late")
        self.assertEqual(self.conn.pop_sent(), [{"rid": cid, "data": "late"}])

    def test_no_handler_no_reply(self):
        """An event without a handler is never answered."""
        result = self.conn.invoke("nobody")
        self.clock.advance(15)
        self.assertNoResult(result)
        self.assertEqual([p for p in self.conn.pop_sent() if p not in ("", "#1")], [])

    def test_emit_without_cid(self):
        """
        Without a cid the handler runs; respond and return values send
        nothing and warn about nothing.
        """
        seen = []

        def handler(data, respond):
            seen.append(data)
            respond(None, 1)
            respond(None, 2)
            return 3

        self.socket.on("e", handler)
        self.conn.emit("e", "x")
        self.assertEqual(seen, ["x"])
        self.assertEqual(self.conn.pop_sent(), [])
        self.assertEqual(self.warnings, [])

    def test_raise_without_cid_is_logged(self):
        """An exception in a handler of an event without cid is logged once."""
        def handler(data, respond):
            raise ValueError("oops")

        self.socket.on("e", handler)
        self.conn.emit("e", "x")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.conn.pop_sent(), [])
        self.assertEqual(self.conn.state, SCServerSocket.OPEN)

    def test_builtin_exception_reply(self):
        """
        A builtin exception handed to C{respond} has only the message, like
        a plain JS Error; raised, it is a bug: the client gets the generic
        error, with none of the exception's text or attributes.
        """
        self.socket.on("e", lambda data, respond: respond(ValueError("plain")))
        cid = self.conn.emit("e", None, cid=True)
        self.assertEqual(self.conn.pop_sent(raw=True),
                         ['{"rid":%d,"error":{"message":"plain"}}' % (cid,)])

        class DatabaseError(Exception):
            def __init__(self):
                Exception.__init__(self, "connection failed")
                self.dsn = "postgres://app:s3cret@db/app"

        def handler(data, respond):
            raise DatabaseError()

        self.socket.on("raising", handler)
        cid = self.conn.emit("raising", None, cid=True)
        self.assertEqual(self.conn.pop_sent(raw=True), [
            '{"rid":%d,"error":{"message":"Server error","name":"UnknownError"}}' % (cid,)])
        self.assertEqual(len(self.flushLoggedErrors(DatabaseError)), 1)

    def test_several_handlers(self):
        """Every handler runs; the first reply wins."""
        calls = []
        self.socket.on("e", lambda data, respond: calls.append(1) or "one")
        self.socket.on("e", lambda data, respond: calls.append(2) or "two")
        self.assertEqual(self.successResultOf(self.conn.invoke("e")), "one")
        self.assertEqual(calls, [1, 2])

    def test_reserved_event_names_ignored(self):
        """
        Client events named as the socket's own events are ignored: no
        handler runs, no reply.
        """
        called = []
        messages = []
        for name in RESERVED_EVENTS - {"message"}:
            self.socket.on(name, lambda *args, name=name: called.append(name))
        self.socket.on("message", messages.append)
        for name in sorted(RESERVED_EVENTS):
            self.conn.emit(name, {"code": 1}, cid=True)
        self.assertEqual(called, [])
        self.assertEqual(len(messages), len(RESERVED_EVENTS))
        self.assertEqual(self.conn.pop_sent(), [])
        self.assertEqual(self.conn.state, SCServerSocket.OPEN)

    def test_unknown_hash_event_dispatched(self):
        """An unknown C{#} event reaches its handler (v1 behaviour)."""
        self.socket.on("#custom", lambda data, respond: data)
        self.assertEqual(self.successResultOf(self.conn.invoke("#custom", 5)), 5)

    def test_message_event(self):
        """The C{'message'} event gets every inbound payload as it came."""
        messages = []
        self.socket.on("message", messages.append)
        self.conn.send_raw("#2")
        self.conn.send_raw(b'{"event":"x"}')
        self.assertEqual(messages, ["#2", b'{"event":"x"}'])


class ServerCallTests(SocketTestCase):
    """C{socket.emit} with a callback and C{socket.invoke}."""

    def setUp(self):
        SocketTestCase.setUp(self)
        self.conn = self.open()
        self.socket = self.conn.socket

    def test_invoke_reply(self):
        """C{invoke} fires with the client's reply data."""
        d = self.socket.invoke("ask", {"q": 1})
        self.assertEqual(self.conn.pop_sent(), [{"event": "ask", "data": {"q": 1}, "cid": 1}])
        self.conn.reply(1, {"a": 2})
        self.assertEqual(self.successResultOf(d), {"a": 2})

    def test_invoke_error(self):
        """The client's error is hydrated: its name and fields are kept."""
        d = self.socket.invoke("ask")
        self.conn.reply(1, error={"message": "client refuses", "name": "ClientRefusalError",
                                  "extra": 42})
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.name, "ClientRefusalError")
        self.assertEqual(failure.value.extra, 42)

    def test_invoke_sc_error(self):
        """A SocketCluster error name hydrates to that class."""
        d = self.socket.invoke("ask")
        self.conn.reply(1, error={"message": "m", "name": "BrokerError"})
        self.failureResultOf(d, errors.BrokerError)

    def test_invoke_string_error(self):
        """A string error fails the Deferred too."""
        d = self.socket.invoke("ask")
        self.conn.reply(1, error="nope")
        failure = self.failureResultOf(d)
        self.assertEqual(str(failure.value), "nope")

    def test_invoke_timeout(self):
        """Without a reply within C{ack_timeout}: C{TimeoutError}."""
        d = self.socket.invoke("slow")
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        failure = self.failureResultOf(d, errors.TimeoutError)
        self.assertEqual(str(failure.value), "Event response for 'slow' timed out")

    def test_invoke_close(self):
        """Closing fails the pending invokes with C{BadConnectionError}."""
        d = self.socket.invoke("ask")
        self.conn.lose_connection()
        self.failureResultOf(d, errors.BadConnectionError)
        self.failureResultOf(self.socket.invoke("again"), errors.BadConnectionError)

    def test_invoke_reserved(self):
        """Invoking a reserved event name fails with C{InvalidActionError}."""
        self.failureResultOf(self.socket.invoke("disconnect"), errors.InvalidActionError)
        self.assertEqual(self.conn.pop_sent(), [])

    def test_emit_callback(self):
        """C{emit} with a callback gets C{(None, data)} or C{(error, None)}."""
        results = []
        self.socket.emit("a", 1, lambda e, d: results.append((e, d)))
        self.socket.emit("b", 2, lambda e, d: results.append((e, d)))
        self.conn.reply(2, error={"message": "no", "name": "X"})
        self.conn.reply(1, "yes")
        self.assertEqual(results[1], (None, "yes"))
        self.assertEqual(results[0][0].name, "X")

    def test_emit_without_callback(self):
        """C{emit} without a callback has no cid; None data is left out."""
        self.socket.emit("a")
        self.socket.emit("b", {"x": 1})
        self.assertEqual(self.conn.pop_sent(raw=True),
                         ['{"event":"a"}', '{"event":"b","data":{"x":1}}'])

    def test_emit_reserved(self):
        """
        Emitting C{'error'} raises the socket's C{'error'} event; another
        reserved name is an C{InvalidActionError} there.
        """
        seen = []
        self.socket.on("error", seen.append)
        error = CustomError("local")
        self.socket.emit("error", error)
        self.socket.emit("message", 123)
        self.assertIs(seen[0], error)
        self.assertIsInstance(seen[1], errors.InvalidActionError)
        self.assertEqual(self.conn.pop_sent(), [])

    def test_send_raw(self):
        """C{send} writes without the codec."""
        self.socket.send("hello")
        self.socket.send(b"\x00\x01")
        self.assertEqual(self.conn.pop_sent(raw=True), ["hello", b"\x00\x01"])

    def test_unencodable_emit(self):
        """An emit the codec cannot encode is reported, not raised."""
        seen = []
        self.socket.on("error", seen.append)
        self.socket.emit("x", {"bad": object()})
        self.assertEqual(len(seen), 1)
        self.assertEqual(self.conn.pop_sent(), [])
        self.assertEqual(self.conn.state, SCServerSocket.OPEN)


class LifecycleTests(SocketTestCase):
    """Registries, counts, event order on close, bytes received."""

    def record_events(self, conn):
        events = []
        for name in ("disconnection", "connectionAbort", "closure"):
            self.server.on(name, lambda socket, code, reason, name=name: events.append(
                ("server " + name, code, reason)))
        for name in ("disconnect", "connectAbort", "close"):
            conn.socket.on(name, lambda code, reason, name=name: events.append(
                (name, code, reason)))
        conn.socket.on("error", lambda error: events.append(
            ("error", type(error).__name__, getattr(error, "code", None))))
        return events

    def test_registries(self):
        """
        A new socket is pending; after the handshake it is a client; after
        the close it is neither.
        """
        conn = self.connect()
        socket = conn.socket
        self.assertEqual(self.server.pending_clients, {socket.id: socket})
        self.assertEqual((self.server.pending_clients_count, self.server.clients_count), (1, 0))
        self.assertEqual(socket.state, SCServerSocket.CONNECTING)
        status = conn.handshake()
        self.assertEqual(status["id"], socket.id)
        self.assertEqual(status["pingTimeout"], 20000)
        self.assertEqual(self.server.clients, {socket.id: socket})
        self.assertEqual((self.server.pending_clients_count, self.server.clients_count), (0, 1))
        self.assertEqual(socket.state, SCServerSocket.OPEN)
        other = self.open()
        self.assertEqual(self.server.clients_count, 2)
        conn.disconnect()
        self.assertEqual(self.server.clients, {other.socket.id: other.socket})
        other.lose_connection()
        self.assertEqual((self.server.pending_clients_count, self.server.clients_count), (0, 0))

    def test_connection_events(self):
        """
        C{'handshake'} fires when the socket is created, C{'connection'}
        with the status (a copy of the reply data), socket C{'connect'}
        first.
        """
        order = []
        self.server.on("handshake", lambda socket: order.append("handshake"))
        self.server.on("connection", lambda socket, status: order.append(("connection", status)))
        conn = self.connect()
        conn.socket.on("connect", lambda status: order.append("connect"))
        status = conn.handshake()
        self.assertEqual(order, ["handshake", "connect", ("connection", status)])

    def test_order_on_client_disconnect(self):
        """
        Closing an open socket: server C{disconnection}, C{closure}; socket
        C{disconnect}, C{close}; then C{'error'} with a
        C{SocketProtocolError} for a code other than 1000/1001.
        """
        conn = self.open()
        events = self.record_events(conn)
        conn.disconnect(4100, "client bye")
        self.assertEqual(events, [
            ("server disconnection", 4100, "client bye"),
            ("server closure", 4100, "client bye"),
            ("disconnect", 4100, "client bye"),
            ("close", 4100, "client bye"),
            ("error", "SocketProtocolError", 4100),
        ])
        self.assertEqual(
            str(self.warnings[-1]),
            "Socket connection closed with status code 4100 and reason: client bye")

    def test_order_on_abort(self):
        """Closing a socket still in the handshake: the C{*Abort} events."""
        conn = self.connect()
        events = self.record_events(conn)
        conn.lose_connection()
        self.assertEqual(events, [
            ("server connectionAbort", 1006, None),
            ("server closure", 1006, None),
            ("connectAbort", 1006, None),
            ("close", 1006, None),
            ("error", "SocketProtocolError", 1006),
        ])

    def test_no_error_for_normal_codes(self):
        """Codes 1000 and 1001 raise no C{SocketProtocolError}."""
        for code in (1000, 1001):
            conn = self.open()
            events = self.record_events(conn)
            conn.lose_connection(code, "")
            self.assertEqual([e[0] for e in events],
                             ["server disconnection", "server closure", "disconnect", "close"])

    def test_order_on_server_disconnect(self):
        """The server's own disconnect reports the same events."""
        conn = self.open()
        events = self.record_events(conn)
        conn.socket.disconnect(4321, "custom reason")
        self.assertEqual([e[0] for e in events], [
            "server disconnection", "server closure", "disconnect", "close", "error"])
        self.assertEqual(conn.closed, (4321, "custom reason"))

    def test_unsubscribe_on_close(self):
        """A closing socket leaves its channels (C{unsubscribe} events before C{disconnect})."""
        conn = self.open()
        conn.subscribe("a")
        events = []
        conn.socket.on("unsubscribe", lambda channel: events.append(("unsubscribe", channel)))
        conn.socket.on("disconnect", lambda code, reason: events.append(("disconnect", code)))
        conn.disconnect()
        self.assertEqual(events, [("unsubscribe", "a"), ("disconnect", 1000)])
        self.assertEqual(self.server.exchange._sockets, {})

    def test_disconnect_code_must_be_int(self):
        """C{disconnect} with a code that is not an int raises."""
        conn = self.open()
        self.assertRaises(errors.InvalidArgumentsError, conn.socket.disconnect, "4000")
        self.assertEqual(conn.state, SCServerSocket.OPEN)

    def test_bytes_received(self):
        """C{get_bytes_received} counts the bytes of every inbound message."""
        conn = self.connect()
        self.assertEqual(conn.socket.get_bytes_received(), 0)
        handshake = '{"event":"#handshake","data":{"authToken":null},"cid":1}'
        conn.send_raw(handshake)
        self.assertEqual(conn.socket.get_bytes_received(), len(handshake))
        conn.send_raw('{"event":"é"}')
        conn.send_raw(b"\x00\x01\x02")
        conn.send_raw("")
        self.assertEqual(conn.socket.get_bytes_received(),
                         len(handshake) + len('{"event":"é"}'.encode("utf-8")) + 3)

    def test_server_close(self):
        """
        C{server.close()} disconnects every socket with 1001 "going away"
        (in the C{#disconnect} event, the close frame and the socket events).
        """
        a = self.open()
        b = self.connect()
        codes = []
        self.server.on("closure", lambda socket, code, reason: codes.append(code))
        d = self.server.close()
        self.successResultOf(d)
        self.assertEqual(codes, [1001, 1001])
        self.assertEqual(a.closed, (1001, "Server is shutting down"))
        self.assertEqual(b.closed, (1001, "Server is shutting down"))
        self.assertEqual(a.sent_events("#disconnect"), [
            {"event": "#disconnect", "data": {"code": 1001, "data": "Server is shutting down"}}])
        self.assertEqual(self.server.clients_count + self.server.pending_clients_count, 0)

    def test_auto_protocol_with_v14_client(self):
        """
        With C{'auto'}, a client that answers C{#1} with C{#2} gets C{''}
        then C{#1} once, then only C{#1}.
        """
        self.server = make_server(self.clock, ping_interval=8, ping_timeout=20)
        conn = self.open()
        for step in (8, 1):
            self.clock.advance(step)
        self.assertEqual(conn.pop_sent(), ["", "#1"])
        conn.pong(1)
        self.assertEqual(conn.socket.protocol_version, 1)
        for _ in range(30):
            self.clock.advance(8)
            self.assertEqual(conn.pop_sent(), ["#1"])
            conn.pong(1)
        self.assertEqual(conn.state, SCServerSocket.OPEN)

    def test_auto_protocol_with_v20_client(self):
        """With C{'auto'}, a client that answers C{''} gets only C{''}."""
        self.server = make_server(self.clock, ping_interval=8, ping_timeout=20)
        conn = self.open()
        for _ in range(30):
            self.clock.advance(8)
            self.assertEqual(conn.pop_sent(), [""])
            conn.pong(2)
            self.clock.advance(0)
        self.assertEqual(conn.socket.protocol_version, 2)
        self.assertEqual(conn.state, SCServerSocket.OPEN)


class TestingHelperTests(SocketTestCase):
    """L{scserver.testing} itself."""

    def test_make_server_clock(self):
        """L{make_server} makes a server on a new Clock."""
        server = make_server()
        self.assertIsInstance(server.reactor, Clock)
        self.assertEqual(server.options["auth_key"], "scserver.testing-secret-key")

    def test_connect_is_fake_connection(self):
        """L{connect} returns a L{FakeConnection} on the server's clock."""
        conn = connect(self.server)
        self.assertIsInstance(conn, FakeConnection)
        self.assertIs(conn.clock, self.clock)
        self.assertIs(conn.socket.server, self.server)

    def test_request(self):
        """The fake request carries the path, query parameters, headers and address."""
        conn = self.connect(path="/socketcluster/?a=1&b=2&a=3", origin="http://example.com",
                            headers={"x-test": "yes"})
        request = conn.socket.request
        self.assertEqual(request.path, "/socketcluster/?a=1&b=2&a=3")
        self.assertEqual(request.params, {"a": ["1", "3"], "b": ["2"]})
        self.assertEqual(request.origin, "http://example.com")
        self.assertEqual(request.headers["x-test"], "yes")
        self.assertEqual(request.headers["origin"], "http://example.com")
        self.assertEqual(conn.socket.remote_address, "127.0.0.1")

    def test_write_prepared(self):
        """
        Publications prepared once by the server (autobahn's
        C{PreparedMessage}) are recorded decoded; plain payloads too.
        """
        output = RecordingOutput()
        output.write_prepared(self.server._prepare_message('{"a":1}'))
        output.write_prepared(self.server._prepare_message(b"\x01\x02"))
        output.write_prepared("text")
        self.assertEqual(output.payloads, ['{"a":1}', b"\x01\x02", "text"])

    def test_writes_after_close_dropped(self):
        """Payloads written after the close are kept apart, as a transport drops them."""
        output = RecordingOutput()
        output.close(1000, "")
        output.write("late")
        output.close(4000, "again")
        self.assertEqual(output.payloads, [])
        self.assertEqual(output.late_payloads, ["late"])
        self.assertEqual(output.close_args, (1000, ""))

    def test_handshake_rejected(self):
        """L{FakeConnection.handshake} raises the rejection error, with its data."""
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC,
                                   lambda req, next: next(CustomError("go away"), 4555))
        conn = self.connect()
        error = self.assertRaises(Exception, conn.handshake)
        self.assertEqual(error.name, "CustomError")
        self.assertEqual(error.data, {"code": 4555})
        self.assertEqual(conn.closed, (4555, ""))

    def test_handshake_not_answered(self):
        """A handshake that waits for asynchronous middleware raises L{NotAnswered}."""
        d = Deferred()
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, lambda req, next: d)
        conn = self.connect()
        self.assertRaises(NotAnswered, conn.handshake)
        d.callback(None)
        self.assertEqual(conn.socket.state, SCServerSocket.OPEN)
        conn.lose_connection(1000)

    def test_invoke_fails_on_close(self):
        """Pending invokes fail with C{BadConnectionError} when the connection closes."""
        conn = self.open()
        d = conn.invoke("nobody")
        conn.lose_connection()
        self.failureResultOf(d, errors.BadConnectionError)

    def test_sent_events_and_pings(self):
        """C{sent_events} flattens batches and filters by name; C{pings} counts pings."""
        conn = self.open()
        conn.socket.emit("a", 1)
        conn.socket.send('[{"event":"b"},{"event":"a","data":2}]')
        self.clock.advance(10)
        self.assertEqual([e.get("data") for e in conn.sent_events("a")], [1, 2])
        self.assertEqual(len(conn.sent_events()), 3)
        self.assertEqual(conn.pings(), 1)

    def test_min_bin_codec(self):
        """With another codec the helper encodes and decodes with it."""
        server = make_server(self.clock, codec_engine=MinBinCodec())
        conn = connect(server)
        status = conn.handshake()
        self.assertIsInstance(conn.payloads[0], bytes)
        self.assertEqual(conn.sent[0], {"rid": 1, "data": status})
        conn.socket.on("e", lambda data, respond: data * 2)
        self.assertEqual(self.successResultOf(conn.invoke("e", 21)), 42)

    def test_no_global_reactor(self):
        """C{scserver.testing} does not install or import the global reactor."""
        import subprocess
        import sys
        code = ("import sys, scserver.testing as t; s = t.make_server(); c = t.connect(s); "
                "c.handshake(); s.reactor.advance(100); "
                "sys.exit('twisted.internet.reactor' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                env=dict(__import__("os").environ,
                                         PYTHONPATH=":".join(p for p in sys.path if p)))
        self.assertEqual(result.returncode, 0, result.stderr)


class UnexpectedErrorTests(SocketTestCase):
    """
    What a client sees when the server fails in a way it did not plan: a
    request always gets an answer (a generic error, nothing of the cause),
    and a failure that leaves the connection in an unknown state closes it
    with 1011 on every path.
    """

    def failing_middleware(self, kind):
        def middleware(req, next):
            d = Deferred()
            self.clock.callLater(1, d.callback, None)
            return d

        self.server.add_middleware(kind, middleware)

    def break_continuation(self, name):
        """Make the socket's continuation C{name} raise."""
        def boom(*args, **kwargs):
            raise RuntimeError("secret internals")
        return boom

    def assertGenericError(self, conn, cid):
        self.assertEqual(conn.reply_to(cid)["error"],
                         {"message": "Server error", "name": "UnknownError"})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_emit_middleware_continuation(self):
        """An error after the emit middleware allowed: the client gets a generic error."""
        self.failing_middleware(SCServer.MIDDLEWARE_EMIT)
        conn = self.open()
        conn.socket.on("chat", lambda data, respond: None)
        conn.socket._dispatch_event = self.break_continuation("_dispatch_event")
        cid = conn.emit("chat", "hi", cid=True)
        self.clock.advance(1)
        self.assertGenericError(conn, cid)

    def test_subscribe_middleware_continuation(self):
        """An error after the subscribe middleware allowed."""
        self.failing_middleware(SCServer.MIDDLEWARE_SUBSCRIBE)
        conn = self.open()
        conn.socket._subscribe = self.break_continuation("_subscribe")
        d = conn.subscribe("news")
        self.clock.advance(1)
        self.failureResultOf(d, errors.UnknownError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_publish_in_middleware_continuation(self):
        """An error after the publishIn middleware allowed."""
        self.failing_middleware(SCServer.MIDDLEWARE_PUBLISH_IN)
        conn = self.open()
        conn.socket._publish = self.break_continuation("_publish")
        d = conn.publish("news", 1)
        self.clock.advance(1)
        failure = self.failureResultOf(d, errors.UnknownError)
        self.assertEqual(str(failure.value), "Server error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_authenticate_continuation(self):
        """An error while answering #authenticate."""
        conn = self.open()
        conn.socket._trigger_auth_events = self.break_continuation("_trigger_auth_events")
        token = self.server.auth_engine.sign_token(
            {"user": "a"}, TRANSCRIPT_KEY, {"algorithm": "HS256", "expires_in": None})
        d = conn.authenticate(token)
        self.failureResultOf(d, errors.UnknownError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_handshake_failure_closes_1011(self):
        """An unexpected error in the handshake closes with 1011 (it was 4008)."""
        conn = self.connect()
        registry = conn.socket._registry

        class Broken:
            promote = self.break_continuation("promote")
            remove = registry.remove

        conn.socket._registry = Broken()
        conn.send({"event": "#handshake", "data": {}, "cid": 1})
        self.assertEqual(conn.closed, (1011, "Server error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_message_failure_closes_1011(self):
        """An unexpected error while handling a message closes with 1011 too."""
        conn = self.open()
        conn.socket._on_subscribe = self.break_continuation("subscribe")
        conn.emit("#subscribe", {"channel": "x"}, cid=True)
        self.assertEqual(conn.closed, (1011, "Server error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
