"""
Interop tests of middleware with the official SocketCluster clients
(socketcluster-client 14.3.2 and 20.0.2, default options) against a real
L{scserver.SCServer} on 127.0.0.1 running L{tests.interop_app}: what a client
observes when subscribe, publishIn, emit, handshakeSC and handshakeWS
middleware block, and when the origin is refused.

The middleware is added here, on the server under test; the scenarios are in
C{tests/interop/scenarios/middleware.js}.

Needs Node.js and C{npm ci --prefix tests/interop}; without them these tests
fail with a message saying so.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests._node import InteropMixin


class NamedError(Exception):
    """
    An application error with a SocketCluster C{name} and extra public
    fields.
    """

    def __init__(self, name, message, **fields):
        super().__init__(message)
        self.name = name
        for key, value in fields.items():
            setattr(self, key, value)


def _query_case(socket):
    """The C{case} query parameter of a socket's upgrade request."""
    values = socket.request.params.get("case") or [None]
    value = values[0]
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _MiddlewareTests(InteropMixin):
    @defer.inlineCallbacks
    def start(self, **options):
        server = yield self.start_server(**options)
        self.warnings = []
        server.on("warning", self.warnings.append)
        return server

    def warning_names(self):
        return [getattr(w, "name", type(w).__name__) for w in self.warnings]

    @defer.inlineCallbacks
    def test_subscribe_blocked(self):
        """
        A subscribe middleware blocking with a custom error: the client's
        subscribeFail carries that error's name, message and extra field.
        A silent block (C{next(True)}): subscribeFail with
        SilentMiddlewareBlockedError (type 'subscribe') and no server
        warning.  The allowed channel is subscribed on both sides.
        """
        server = yield self.start()
        seen = []

        def subscribe(req, next):
            seen.append(req.channel)
            if req.channel == "forbidden":
                next(NamedError("ForbiddenChannelError", "You may not subscribe to forbidden",
                                channel=req.channel))
            elif req.channel == "silent":
                next(True)
            else:
                next()

        server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, subscribe)
        r = yield self.scenario("subscribeMiddleware", {"channels": ["allowed", "forbidden", "silent"]})
        forbidden = {
            "name": "ForbiddenChannelError",
            "message": "You may not subscribe to forbidden",
            "channel": "forbidden",
        }
        silent = {
            "name": "SilentMiddlewareBlockedError",
            "message": "Action was silently blocked by subscribe middleware",
            "type": "subscribe",
        }
        self.assertEqual(
            r["results"],
            [
                {"channel": "allowed", "subscribed": True},
                {"channel": "forbidden", "subscribed": False, "error": forbidden},
                {"channel": "silent", "subscribed": False, "error": silent},
            ],
        )
        self.assertEqual(
            r["subscribeFail"],
            [
                {"event": "subscribeFail", "channel": "forbidden", "error": forbidden},
                {"event": "subscribeFail", "channel": "silent", "error": silent},
            ],
        )
        self.assertEqual(r["clientSubscribed"], ["allowed"])
        self.assertEqual(r["serverSubscriptions"], ["allowed"])
        self.assertEqual(r["state"], "open")
        self.assertEqual(seen, ["allowed", "forbidden", "silent"])
        self.assertEqual(self.warning_names(), ["ForbiddenChannelError"])

    @defer.inlineCallbacks
    def test_publish_ack_data(self):
        """
        C{req.ack_data} set by publishIn middleware is the data of the
        publish reply, also when the middleware blocks (then with the
        error).  The v14 client hands it to the publish callback in both
        cases; the v20 client's C{invokePublish} resolves with it, but on a
        block it only surfaces the error, so there the wire frame is
        checked.  The blocked publish is delivered to nobody.
        """
        server = yield self.start()

        def publish_in(req, next):
            if req.channel == "blockedPub":
                req.ack_data = {"attempted": True}
                next(NamedError("PublishBlockedError", "Publishing to blockedPub is not allowed"))
            else:
                req.ack_data = {"accepted": True, "seq": 7}
                next()

        server.add_middleware(server.MIDDLEWARE_PUBLISH_IN, publish_in)
        r = yield self.scenario("publishMiddleware", {"channel": "pubChan", "blocked": "blockedPub"})
        blocked_error = {
            "name": "PublishBlockedError",
            "message": "Publishing to blockedPub is not allowed",
        }
        self.assertEqual(r["subscribe"], {"channel": "pubChan", "subscribed": True})
        # The client API.
        self.assertEqual(r["allowed"], {"data": {"accepted": True, "seq": 7}})
        if self.version == 14:
            self.assertEqual(r["blocked"], {"error": blocked_error, "data": {"attempted": True}})
        else:
            self.assertEqual(r["blocked"], {"error": blocked_error})
        # The wire.
        self.assertEqual(r["okReply"]["data"], {"accepted": True, "seq": 7})
        self.assertNotIn("error", r["okReply"])
        self.assertEqual(r["blockedReply"]["data"], {"attempted": True})
        self.assertEqual(r["blockedReply"]["error"], blocked_error)
        self.assertEqual(r["messages"], [{"x": 1}])
        self.assertEqual(r["blockedFrames"], [])
        self.assertEqual(r["state"], "open")
        self.assertEqual(self.warning_names(), ["PublishBlockedError"])

    @defer.inlineCallbacks
    def test_emit_blocked(self):
        """
        Emit middleware blocking an event with an error: the client's emit
        callback (v14) / invoke (v20) gets that error and the handler never
        runs; a silent block gives SilentMiddlewareBlockedError (type
        'emit'); other events, with or without ack, reach their handlers.
        """
        server = yield self.start()
        seen = []

        def emit(req, next):
            seen.append(req.event)
            if req.event == "forbiddenEvent":
                next(NamedError("EmitBlockedError", "forbiddenEvent is blocked"))
            elif req.event == "silentEvent":
                next(True)
            else:
                next()

        server.add_middleware(server.MIDDLEWARE_EMIT, emit)
        r = yield self.scenario("emitMiddleware", {"ackTimeout": 3000})
        self.assertEqual(r["echo"], {"data": {"hello": "middleware"}})
        blocked = {"name": "EmitBlockedError", "message": "forbiddenEvent is blocked"}
        self.assertEqual(r["blocked"], {"error": blocked})
        self.assertEqual(r["blockedReply"]["error"], blocked)
        self.assertEqual(
            r["silent"],
            {
                "error": {
                    "name": "SilentMiddlewareBlockedError",
                    "message": "Action was silently blocked by emit middleware",
                    "type": "emit",
                }
            },
        )
        self.assertEqual(r["noackReceived"], {"data": [{"through": "middleware"}]})
        self.assertEqual(r["state"], "open")
        self.assertEqual(r["events"], ["connect"])
        self.assertEqual(
            seen, ["echo", "forbiddenEvent", "silentEvent", "noack", "noackReceived"]
        )
        self.assertEqual(self.warning_names(), ["EmitBlockedError"])

    def _handshake_sc_middleware(self, server):
        """
        HandshakeSC middleware rejecting by the C{case} query parameter:
        C{custom} with an error whose C{status_code} is 4555, C{result} with
        C{next(err, 4600)}, C{default} with a plain error (4008).
        """
        seen = []

        def handshake_sc(req, next):
            case = _query_case(req.socket)
            seen.append(case)
            error = NamedError("HandshakeRejectedError", "Handshake rejected by test middleware")
            if case == "custom":
                error.status_code = 4555
                next(error)
            elif case == "result":
                next(error, 4600)
            elif case == "default":
                next(error)
            else:
                next()

        server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC, handshake_sc)
        return seen

    def _check_sc_rejection(self, r, code, wire_status_code):
        reason = "HandshakeRejectedError: Handshake rejected by test middleware"
        self.assertEqual(r["outcome"], "connectAbort", r)
        self.assertEqual(r["code"], code)
        self.assertEqual(r["reason"], reason)
        self.assertEqual(r["state"], "closed")
        error = {
            "name": "HandshakeRejectedError",
            "message": "Handshake rejected by test middleware",
            "statusCode": wire_status_code,
        }

        def core(e):
            # An error's public attributes travel too (status_code, when
            # the middleware set it); compare the SocketCluster fields.
            return {k: e.get(k) for k in error}

        errors = [core(e["error"]) for e in r["events"] if e["event"] == "error"]
        self.assertIn(error, errors)
        self.assertIn(
            {"event": "connectAbort", "code": code, "reason": reason}, r["events"]
        )
        self.assertNotIn("connect", [e["event"] for e in r["events"]])
        # The handshake's error reply carries data {code} and the statusCode.
        reply = [p for p in r["packets"] if p.get("rid") == 1]
        self.assertEqual(len(reply), 1, r["packets"])
        self.assertEqual(core(reply[0]["error"]), error)
        self.assertEqual(reply[0]["data"], {"code": wire_status_code})

    @defer.inlineCallbacks
    def test_handshake_sc_rejected_status_code(self):
        """
        HandshakeSC middleware rejecting with an error whose C{status_code}
        is 4555: the client gets the error reply and connectAbort with code
        4555 and reason 'Name: message'; the server never emits
        'connection'.
        """
        server = yield self.start()
        seen = self._handshake_sc_middleware(server)
        aborts = []
        server.on("connectionAbort", lambda socket, code, reason: aborts.append(code))
        r = yield self.scenario("connectOutcome", {"query": "case=custom", "raw": False})
        self._check_sc_rejection(r, 4555, 4555)
        self.assertEqual(seen, ["custom"])
        self.assertEqual(self.server.interop_sockets, [])
        self.assertEqual(aborts, [4555])
        self.assertEqual(server.clients_count, 0)

    @defer.inlineCallbacks
    def test_handshake_sc_rejected_next_code(self):
        """
        C{next(err, 4600)} closes with 4600.
        """
        server = yield self.start()
        self._handshake_sc_middleware(server)
        r = yield self.scenario("connectOutcome", {"query": "case=result", "raw": False})
        self._check_sc_rejection(r, 4600, 4600)
        self.assertEqual(self.server.interop_sockets, [])

    @defer.inlineCallbacks
    def test_handshake_sc_rejected_default_code(self):
        """
        Without a code the rejection closes with 4008; the error reply
        carries C{statusCode: 4008}, which the v20 client needs to report
        4008 (without it, it reports its own 4003).
        """
        server = yield self.start()
        self._handshake_sc_middleware(server)
        r = yield self.scenario("connectOutcome", {"query": "case=default", "raw": False})
        self._check_sc_rejection(r, 4008, 4008)
        socket_errors = [
            e["error"] for e in r["events"]
            if e["event"] == "error" and e["error"]["name"] == "SocketProtocolError"
        ]
        self.assertEqual(
            socket_errors,
            [{"name": "SocketProtocolError", "message": "Server rejected handshake from client",
              "code": 4008}],
        )
        self.assertEqual(self.server.interop_sockets, [])

    @defer.inlineCallbacks
    def test_handshake_ws_rejected(self):
        """
        HandshakeWS middleware blocking the upgrade: the HTTP response is
        401 with the error message as the body; the client only sees a
        failed connection (connectAbort 1006); the server creates no
        socket.
        """
        server = yield self.start()
        paths = []
        handshakes = []
        server.on("handshake", handshakes.append)

        def handshake_ws(req, next):
            paths.append(req.request.path)
            if "case=ws" in req.request.path:
                next(NamedError("UpgradeRefusedError", "Upgrade refused"))
            else:
                next()

        server.add_middleware(server.MIDDLEWARE_HANDSHAKE_WS, handshake_ws)
        r = yield self.scenario("connectOutcome", {"query": "case=ws"})
        self.assertEqual(r["outcome"], "connectAbort", r)
        self.assertEqual(r["code"], 1006)
        self.assertEqual(r["state"], "closed")
        self.assertEqual(r["packets"], [])
        self.assertNotIn("connect", [e["event"] for e in r["events"]])
        self.assertIs(r["raw"]["opened"], False)
        self.assertEqual(r["raw"]["http"]["statusCode"], 401)
        self.assertEqual(r["raw"]["http"]["body"], "Upgrade refused")
        # Both the client and the raw WebSocket reached the middleware.
        self.assertEqual(paths, ["/socketcluster/?case=ws"] * 2)
        self.assertEqual(handshakes, [])
        self.assertEqual(self.server.interop_sockets, [])
        self.assertEqual(server.pending_clients_count, 0)
        self.assertEqual(server.clients_count, 0)
        self.assertEqual(self.warning_names(), ["UpgradeRefusedError"] * 2)

    @defer.inlineCallbacks
    def test_origin_rejected(self):
        """
        With C{origins=['allowed.example:*']}, an upgrade from another
        Origin gets HTTP 403 ('Failed to authorize socket handshake -
        Invalid origin: ...'); the client sees connectAbort 1006.
        """
        server = yield self.start(origins=["allowed.example:*"])
        handshakes = []
        server.on("handshake", handshakes.append)
        r = yield self.scenario("connectOutcome", {"origin": "http://evil.example"})
        self.assertEqual(r["outcome"], "connectAbort", r)
        self.assertEqual(r["code"], 1006)
        self.assertEqual(r["packets"], [])
        self.assertIs(r["raw"]["opened"], False)
        self.assertEqual(r["raw"]["http"]["statusCode"], 403)
        self.assertEqual(
            r["raw"]["http"]["body"],
            "Failed to authorize socket handshake - Invalid origin: http://evil.example",
        )
        self.assertEqual(handshakes, [])
        self.assertEqual(self.server.interop_sockets, [])
        self.assertEqual(len(self.warnings), 2)

    @defer.inlineCallbacks
    def test_origin_allowed(self):
        """
        An Origin matching C{allowed.example:*} connects.
        """
        yield self.start(origins=["allowed.example:*"])
        r = yield self.scenario("connectOutcome", {"origin": "http://allowed.example:3000"})
        self.assertEqual(r["outcome"], "connect", r)
        self.assertIs(r["status"]["isAuthenticated"], False)
        self.assertIs(r["raw"]["opened"], True)
        self.assertEqual(len(self.server.interop_sockets), 1)
        self.assertEqual(
            self.server.interop_sockets[0].request.origin, "http://allowed.example:3000"
        )


class MiddlewareV14Tests(_MiddlewareTests, unittest.TestCase):
    """
    socketcluster-client 14.3.2.
    """

    version = 14


class MiddlewareV20Tests(_MiddlewareTests, unittest.TestCase):
    """
    socketcluster-client 20.0.2 with default options (protocolVersion 2).
    """

    version = 20
