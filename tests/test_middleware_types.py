"""
Every middleware type end to end: what C{req} holds, what a block does to
the client, and the C{'warning'} it raises.

C{handshakeWS} and C{origins} run at the HTTP upgrade, so they are tested
through the server's real WebSocket transport with a raw HTTP client (the
refusal is an HTTP response, not a WebSocket), connected in memory
(L{scserver.testing.MemoryNetwork}).  The other types are tested with
L{scserver.testing} connections driven by a L{Clock}.
"""

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from scserver import SCServer
from scserver._transport import origin_allowed
from scserver.client import connect as client_connect
from scserver.errors import (
    AuthTokenExpiredError,
    InvalidActionError,
    InvalidArgumentsError,
    SCError,
    ServerProtocolError,
    SilentMiddlewareBlockedError,
)
from scserver.testing import MemoryNetwork, NotAnswered, connect, make_server
from tests._helpers import ClockServerCase, MemoryCase, names, publications

KEY = "middleware-types-test-key-0123456789abcdef"


class AppError(SCError):
    """
    An application error; SocketCluster sends its class name as the name.
    Applications derive their errors from the package's SocketCluster error
    class: raised by a middleware, only those reach the client.
    """


class TooLazyHandshakeError(SCError):
    pass


class AuthenticateMiddlewareError(SCError):
    pass


class FakeCase(ClockServerCase):
    """A server on a Clock, with its warnings recorded."""

    auth_key = KEY

    def token_for(self, payload, expires_in=None):
        """Sign C{payload} with the server's key, as set_auth_token would."""
        conn = self.open()
        d = conn.socket.set_auth_token(payload, expires_in=expires_in)
        signed = self.successResultOf(d)
        conn.disconnect()
        del self.warnings[:]
        return signed

    def middleware_warnings(self):
        """The warnings other than the close-code SocketProtocolErrors."""
        return [w for w in self.warnings if getattr(w, "name", None) != "SocketProtocolError"]


# -- handshakeWS and origins: the HTTP upgrade, on a memory network ------------


class RawHTTP(Protocol):
    """Sends one request and records everything the server answers."""

    def __init__(self, request):
        self.request = request
        self.received = b""
        self.head = Deferred()
        self.lost = Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data
        if self.head is not None and b"\r\n\r\n" in self.received:
            head, self.head = self.head, None
            head.callback(self.received)

    def connectionLost(self, reason):
        if self.head is not None:
            head, self.head = self.head, None
            head.callback(self.received)
        self.lost.callback(self.received)


def parse_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body.decode("utf-8")


class RealServerCase(MemoryCase):
    def start(self, **options):
        options.setdefault("auth_key", KEY)
        self.server = SCServer(reactor=self.clock, **options)
        self.warnings = []
        self.server.on("warning", self.warnings.append)
        self.handshakes = []
        self.server.on("handshake", self.handshakes.append)
        self.net = MemoryNetwork(self.server)
        self.url = self.net.default_url
        self.addCleanup(lambda: self.wait(self.server.close()))
        return self.server

    def upgrade(self, path="/socketcluster/", origin=None, headers=()):
        """
        Send a WebSocket upgrade request.

        @return: C{(status, headers, body)}; a connection that upgraded
            (101) is dropped at once.
        """
        lines = [
            "GET {} HTTP/1.1".format(path),
            "Host: localhost",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append("Origin: {}".format(origin))
        for name, value in headers:
            lines.append("{}: {}".format(name, value))
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        protocol = RawHTTP(request)
        head = protocol.head
        self.wait(connectProtocol(TCP4ClientEndpoint(self.net.reactor, "localhost", 80),
                                  protocol))
        raw = self.wait(head)
        status, response_headers, body = parse_response(raw)
        if status == 101:
            protocol.transport.abortConnection()
            self.wait(protocol.lost)
        else:
            raw = self.wait(protocol.lost)
            status, response_headers, body = parse_response(raw)
        return status, response_headers, body


class HandshakeWSTests(RealServerCase):
    def test_requestAttributes(self):
        """
        C{req.request} is the HTTP upgrade request: C{path} with the query
        string, lower-case C{headers}, C{origin}, C{peer} and C{params} (a
        dict of lists); the socket later has the same object as
        C{socket.request}.
        """
        self.start()
        requests = []

        def handshake_ws(req, next):
            requests.append(req)
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS, handshake_ws)
        status, _, _ = self.upgrade(
            path="/socketcluster/?user=bob&tag=a&tag=b", origin="https://example.com",
            headers=[("X-Custom", "yes")])
        self.assertEqual(status, 101)
        self.assertEqual(len(requests), 1)
        req = requests[0]
        self.assertEqual(req.type, "handshakeWS")
        request = req.request
        self.assertEqual(request.path, "/socketcluster/?user=bob&tag=a&tag=b")
        self.assertEqual(request.params, {"user": ["bob"], "tag": ["a", "b"]})
        self.assertEqual(request.origin, "https://example.com")
        self.assertEqual(request.headers["x-custom"], "yes")
        self.assertEqual(request.headers["origin"], "https://example.com")
        self.assertRegex(request.peer, r"^tcp4?:127\.0\.0\.1:\d+$")
        self.assertEqual(len(self.handshakes), 1)
        self.assertIs(self.handshakes[0].request, request)
        self.assertEqual(self.handshakes[0].remote_address, "127.0.0.1")

    def test_blockIs401WithMessage(self):
        """
        A block answers the upgrade with HTTP 401 and the error's message as
        the body; no WebSocket (no server socket) is created, and the server
        emits the error as a 'warning'.
        """
        self.start()
        error = AppError("You shall not pass")
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: next(error))
        status, headers, body = self.upgrade()
        self.assertEqual(status, 401)
        self.assertEqual(body, "You shall not pass")
        self.assertNotIn("upgrade", headers)
        self.assertNotIn("sec-websocket-accept", headers)
        self.assertEqual(self.handshakes, [])
        self.assertEqual(self.server.pending_clients_count, 0)
        self.assertEqual(self.server.clients_count, 0)
        self.assertEqual(self.warnings, [error])

    def test_stringBlock(self):
        self.start()
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: next("no entry"))
        status, _, body = self.upgrade()
        self.assertEqual((status, body), (401, "no entry"))

    def test_silentBlock(self):
        """
        C{next(True)} refuses with 401 and the SilentMiddlewareBlockedError
        message, without a 'warning'.
        """
        self.start()
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: next(True))
        status, _, body = self.upgrade()
        self.assertEqual(status, 401)
        self.assertEqual(body, "Action was silently blocked by handshakeWS middleware")
        self.assertEqual(self.warnings, [])
        self.assertEqual(self.handshakes, [])

    def test_warningsDisabled(self):
        self.start(middleware_emit_warnings=False)
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: next(AppError("quiet refusal")))
        status, _, body = self.upgrade()
        self.assertEqual((status, body), (401, "quiet refusal"))
        self.assertEqual(self.warnings, [])

    def test_asyncBlock(self):
        """A middleware returning a Deferred that fails blocks with its error."""
        self.start()

        def handshake_ws(req):
            return defer.ensureDeferred(self._later_fail(AppError("later no")))

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: handshake_ws(req))
        status, _, body = self.upgrade()
        self.assertEqual((status, body), (401, "later no"))

    async def _later_fail(self, error):
        from twisted.internet.task import deferLater
        await deferLater(self.clock, 0.01, lambda: None)
        raise error

    def test_blockByQuery(self):
        """A typical use: refuse by a query parameter, allow the others."""
        self.start()

        def handshake_ws(req, next):
            if req.request.params.get("key") == ["secret"]:
                next()
            else:
                next(AppError("bad key"))

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS, handshake_ws)
        status, _, body = self.upgrade(path="/socketcluster/?key=wrong")
        self.assertEqual((status, body), (401, "bad key"))
        status, _, _ = self.upgrade(path="/socketcluster/?key=secret")
        self.assertEqual(status, 101)

    def test_allowedClientConnects(self):
        """With the middleware allowing, a real client completes the handshake."""
        self.start()
        seen = []
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: (seen.append(req.request.path), next()))
        client = self.wait(client_connect(self.url + "?n=1", reactor=self.net.reactor,
                                          auto_reconnect=False))
        self.addCleanup(lambda: self.wait(client.disconnect()))
        self.assertEqual(client.state, "open")
        self.assertEqual(seen, ["/socketcluster/?n=1"])

    def test_blockedClientSeesNoHandshake(self):
        """The real client's connect() fails; the server never made a socket."""
        self.start()
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: next(AppError("go away")))
        errors = []
        from scserver.client import SCClientSocket
        client = SCClientSocket(self.url, reactor=self.net.reactor, auto_reconnect=False)
        client.on("error", errors.append)
        closes = []
        client.on("connectAbort", lambda code, reason: closes.append(code))
        self.wait_failure(client.connect(), Exception)
        self.assertEqual(self.handshakes, [])
        self.assertEqual(len(closes), 1)
        self.assertNotEqual(closes[0], 1000)


class OriginsTests(RealServerCase):
    def test_exactNotSubstring(self):
        """
        origins=['myexample.com:443'] refuses https://example.com (v14's
        string indexOf would have admitted it) with HTTP 403 before the
        upgrade, and emits a 'warning'.
        """
        self.start(origins=["myexample.com:443"])
        status, headers, body = self.upgrade(origin="https://example.com")
        self.assertEqual(status, 403)
        self.assertEqual(
            body, "Failed to authorize socket handshake - Invalid origin: https://example.com")
        self.assertNotIn("sec-websocket-accept", headers)
        self.assertEqual(self.handshakes, [])
        self.assertEqual(len(self.warnings), 1)
        self.assertIsInstance(self.warnings[0], ServerProtocolError)
        self.assertIn("Invalid origin: https://example.com", self.warnings[0].message)
        status, _, _ = self.upgrade(origin="https://myexample.com")
        self.assertEqual(status, 101)

    def test_stringOptionIsNotSubstringMatched(self):
        """The option given as one string is still matched per pattern."""
        self.start(origins="myexample.com:443")
        status, _, _ = self.upgrade(origin="https://example.com")
        self.assertEqual(status, 403)
        status, _, _ = self.upgrade(origin="https://ample.com")
        self.assertEqual(status, 403)
        status, _, _ = self.upgrade(origin="https://myexample.com")
        self.assertEqual(status, 101)

    def test_defaultPorts(self):
        """https without a port is 443, http without a port is 80."""
        self.start(origins=["secure.example:443", "plain.example:80"])
        results = []
        for origin in ("https://secure.example", "http://secure.example",
                       "http://plain.example", "https://plain.example",
                       "https://secure.example:8443", "http://plain.example:80"):
            status, _, _ = self.upgrade(origin=origin)
            results.append((origin, status))
        self.assertEqual(results, [
            ("https://secure.example", 101), ("http://secure.example", 403),
            ("http://plain.example", 101), ("https://plain.example", 403),
            ("https://secure.example:8443", 403), ("http://plain.example:80", 101),
        ])

    def test_missingOriginAllowed(self):
        """Clients that send no Origin (not browsers) are let through."""
        self.start(origins=["myexample.com:443"])
        status, _, _ = self.upgrade()
        self.assertEqual(status, 101)
        client = self.wait(client_connect(self.url, reactor=self.net.reactor,
                                          auto_reconnect=False))
        self.addCleanup(lambda: self.wait(client.disconnect()))
        self.assertEqual(client.state, "open")

    def test_wildcards(self):
        self.start(origins=["*.example.com:*", "*:8000"])
        results = []
        for origin in ("https://a.example.com", "http://b.example.com:1234",
                       "https://example.com", "http://anything.org:8000",
                       "http://anything.org:8001", "https://a.example.com.evil.org"):
            status, _, _ = self.upgrade(origin=origin)
            results.append((origin, status))
        self.assertEqual(results, [
            ("https://a.example.com", 101), ("http://b.example.com:1234", 101),
            ("https://example.com", 403), ("http://anything.org:8000", 101),
            ("http://anything.org:8001", 403), ("https://a.example.com.evil.org", 403),
        ])

    def test_originCheckedBeforeHandshakeWS(self):
        """A refused origin never reaches the handshakeWS middleware."""
        self.start(origins=["good.example:443"])
        calls = []
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: (calls.append(req), next()))
        status, _, _ = self.upgrade(origin="https://bad.example")
        self.assertEqual(status, 403)
        self.assertEqual(calls, [])
        status, _, _ = self.upgrade(origin="https://good.example")
        self.assertEqual(status, 101)
        self.assertEqual(len(calls), 1)


class OriginMatchingTests(SynchronousTestCase):
    """L{origin_allowed} on its own."""

    def test_anyAny(self):
        self.assertTrue(origin_allowed("https://whatever.org:1", ["*:*"]))

    def test_exact(self):
        patterns = ["myexample.com:443"]
        self.assertTrue(origin_allowed("https://myexample.com", patterns))
        self.assertTrue(origin_allowed("https://myexample.com:443", patterns))
        self.assertFalse(origin_allowed("https://example.com", patterns))
        self.assertFalse(origin_allowed("https://myexample.com.evil.org", patterns))
        self.assertFalse(origin_allowed("https://evilmyexample.com", patterns))
        self.assertFalse(origin_allowed("http://myexample.com", patterns))

    def test_missing(self):
        for origin in (None, "", "null"):
            self.assertTrue(origin_allowed(origin, ["myexample.com:443"]), origin)

    def test_garbage(self):
        self.assertFalse(origin_allowed("not a url", ["myexample.com:443"]))

    def test_portWildcard(self):
        self.assertTrue(origin_allowed("http://example.com:9999", ["example.com:*"]))
        self.assertFalse(origin_allowed("http://other.com:9999", ["example.com:*"]))


# -- handshakeSC ---------------------------------------------------------------


class HandshakeSCTests(FakeCase):
    def lazy(self, req, next):
        next(TooLazyHandshakeError("SC handshake failed because the server was too lazy"))

    def test_req(self):
        """C{req.socket} is the connecting socket, with its upgrade request."""
        seen = []

        def handshake_sc(req, next):
            seen.append((req.type, req.socket, req.socket.state,
                         req.socket.id in self.server.pending_clients,
                         req.socket.request.params))
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, handshake_sc)
        conn = connect(self.server, path="/socketcluster/?room=1")
        status = conn.handshake()
        self.assertEqual(seen, [("handshakeSC", conn.socket, "connecting", True, {"room": ["1"]})])
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(conn.state, "open")

    def test_blockDefaultCode(self):
        """
        A block answers the handshake with the error (its statusCode set)
        and C{data: {code: 4008}}, sends C{#disconnect}, and closes with
        4008; the socket aborts (never connects) and a 'warning' fires.
        """
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, self.lazy)
        events = []
        self.server.on("connection", lambda s, st: events.append("connection"))
        self.server.on("connectionAbort", lambda s, c, r: events.append(("connectionAbort", c)))
        conn = connect(self.server)
        conn.socket.on("connectAbort", lambda c, r: events.append(("connectAbort", c)))
        conn.socket.on("connect", lambda st: events.append("connect"))
        cid = conn.emit("#handshake", {"authToken": None}, cid=True)
        self.assertEqual(conn.sent, [
            {"rid": cid, "error": {
                "message": "SC handshake failed because the server was too lazy",
                "name": "TooLazyHandshakeError", "statusCode": 4008},
             "data": {"code": 4008}},
            {"event": "#disconnect", "data": {"code": 4008}},
        ])
        self.assertEqual(conn.closed[0], 4008)
        self.assertEqual(events, [("connectionAbort", 4008), ("connectAbort", 4008)])
        self.assertEqual(names(self.middleware_warnings()), ["TooLazyHandshakeError"])
        self.assertEqual(self.server.clients_count + self.server.pending_clients_count, 0)

    def test_codeFromNext(self):
        def handshake_sc(req, next):
            next(AppError("bad query"), 4501)

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, handshake_sc)
        conn = connect(self.server)
        with self.assertRaises(Exception) as caught:
            conn.handshake()
        self.assertEqual(caught.exception.name, "AppError")
        self.assertEqual(caught.exception.statusCode, 4501)
        self.assertEqual(caught.exception.data, {"code": 4501})
        self.assertEqual(conn.sent_events("#disconnect"),
                         [{"event": "#disconnect", "data": {"code": 4501}}])
        self.assertEqual(conn.closed[0], 4501)

    def test_codeFromErrorAttribute(self):
        error = AppError("not today")
        error.status_code = 4502
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC,
                                   lambda req, next: next(error))
        conn = connect(self.server)
        self.assertRaises(Exception, conn.handshake)
        reply = conn.reply_to(1)
        self.assertEqual(reply["error"]["statusCode"], 4502)
        self.assertEqual(reply["data"], {"code": 4502})
        self.assertEqual(conn.closed[0], 4502)

    def test_asyncRaiseWithStatusCode(self):
        """A coroutine middleware raising an error with statusCode."""
        async def handshake_sc(req, next):
            error = AppError("async no")
            error.statusCode = 4503
            raise error

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, handshake_sc)
        conn = connect(self.server)
        self.assertRaises(Exception, conn.handshake)
        self.assertEqual(conn.reply_to(1)["data"], {"code": 4503})
        self.assertEqual(conn.closed[0], 4503)

    def test_silentBlock(self):
        """
        C{next(True)}: the client gets SilentMiddlewareBlockedError (type
        handshakeSC), the close is 4008, and no middleware warning fires.
        """
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, lambda req, next: next(True))
        conn = connect(self.server)
        with self.assertRaises(SilentMiddlewareBlockedError) as caught:
            conn.handshake()
        self.assertEqual(caught.exception.type, "handshakeSC")
        self.assertEqual(caught.exception.message,
                         "Action was silently blocked by handshakeSC middleware")
        self.assertEqual(caught.exception.data, {"code": 4008})
        self.assertEqual(conn.closed[0], 4008)
        self.assertEqual(self.middleware_warnings(), [])

    def test_warningsDisabled(self):
        server = self.make_server(middleware_emit_warnings=False)
        server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, self.lazy)
        conn = connect(server)
        self.assertRaises(Exception, conn.handshake)
        self.assertEqual(conn.closed[0], 4008)
        self.assertEqual(self.middleware_warnings(), [])

    def test_delayedNext(self):
        """The handshake is answered only once the middleware calls next()."""
        saved = []
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC,
                                   lambda req, next: saved.append(next))
        conn = connect(self.server)
        self.assertRaises(NotAnswered, conn.handshake)
        self.assertEqual(conn.state, "connecting")
        self.assertEqual(conn.sent, [])
        saved[0]()
        self.assertEqual(conn.state, "open")
        reply = conn.reply_to(1)
        self.assertEqual(reply["data"]["id"], conn.socket.id)

    def test_setAuthTokenInside(self):
        """
        C{req.socket.set_auth_token()} inside handshakeSC authenticates the
        socket: C{#setAuthToken} goes out before the handshake reply, which
        says isAuthenticated; the state changes once.
        """
        def handshake_sc(req, next):
            req.socket.set_auth_token({"username": "alice"})
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, handshake_sc)
        changes = []
        authentications = []
        self.server.on("authenticationStateChange", lambda s, change: changes.append(change))
        self.server.on("authentication", lambda s, token: authentications.append(token))
        conn = connect(self.server)
        status = conn.handshake()
        self.assertTrue(status["isAuthenticated"])
        self.assertNotIn("authError", status)
        kinds = [p.get("event", "reply") for p in conn.sent if isinstance(p, dict)]
        self.assertEqual(kinds, ["#setAuthToken", "reply"])
        token = conn.sent[0]["data"]["token"]
        self.assertEqual(conn.socket.signed_auth_token, token)
        self.assertEqual(conn.socket.auth_state, "authenticated")
        self.assertEqual(conn.socket.auth_token["username"], "alice")
        self.assertEqual([(c["oldState"], c["newState"]) for c in changes],
                         [("unauthenticated", "authenticated")])
        self.assertTrue(authentications)
        self.assertTrue(all(t["username"] == "alice" for t in authentications))
        # The token is a real one: another connection authenticates with it.
        self.server.remove_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, handshake_sc)
        self.assertTrue(self.open(token=token).socket.auth_state == "authenticated")


# -- authenticate ----------------------------------------------------------------


class AuthenticateTests(FakeCase):
    def setUp(self):
        FakeCase.setUp(self)
        self.bob = self.token_for({"username": "bob"})
        self.calls = []

    def record(self, req, next):
        self.calls.append(req)
        next()

    def test_handshakeToken(self):
        """
        Runs after the handshake token verified: C{req.socket},
        C{req.auth_token} (the payload), C{req.signed_auth_token}.
        """
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, self.record)
        conn = connect(self.server)
        status = conn.handshake(self.bob)
        self.assertTrue(status["isAuthenticated"])
        self.assertEqual(len(self.calls), 1)
        req = self.calls[0]
        self.assertEqual(req.type, "authenticate")
        self.assertIs(req.socket, conn.socket)
        self.assertEqual(req.auth_token["username"], "bob")
        self.assertEqual(req.signed_auth_token, self.bob)

    def test_authenticateEvent(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, self.record)
        conn = self.open()
        reply = self.successResultOf(conn.authenticate(self.bob))
        self.assertEqual(reply, {"isAuthenticated": True, "authError": None})
        self.assertEqual([r.signed_auth_token for r in self.calls], [self.bob])
        self.assertEqual(conn.socket.auth_token["username"], "bob")

    def test_notForSetAuthToken(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, self.record)
        conn = self.open()
        self.successResultOf(conn.socket.set_auth_token({"username": "carol"}))
        self.assertEqual(self.calls, [])
        self.assertEqual(conn.socket.auth_state, "authenticated")

    def test_notWithoutToken(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, self.record)
        self.open()
        self.assertEqual(self.calls, [])

    def test_notForInvalidToken(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, self.record)
        conn = connect(self.server)
        status = conn.handshake(self.bob[:-4] + "AAAA")
        self.assertEqual(status["authError"]["name"], "AuthTokenInvalidError")
        self.assertEqual(self.calls, [])

    def test_softBlockAtHandshake(self):
        """
        C{next(err)}: the socket stays unauthenticated, the status carries
        the error, the token is not removed, the connection is open.
        """
        error = AuthenticateMiddlewareError("Blocked by MIDDLEWARE_AUTHENTICATE")
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE,
                                   lambda req, next: next(error))
        bad = []
        self.server.on("badSocketAuthToken", lambda s, info: bad.append(info))
        conn = connect(self.server)
        status = conn.handshake(self.bob)
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(status["authError"],
                         {"message": "Blocked by MIDDLEWARE_AUTHENTICATE",
                          "name": "AuthenticateMiddlewareError"})
        self.assertEqual(conn.sent_events("#removeAuthToken"), [])
        self.assertEqual(bad, [])
        self.assertEqual(conn.socket.auth_state, "unauthenticated")
        self.assertIsNone(conn.socket.auth_token)
        self.assertEqual(conn.state, "open")
        self.assertIn(error, self.warnings)

    def test_badTokenBlockAtHandshake(self):
        """
        C{next(err, True)} marks the token bad: C{#removeAuthToken} before
        the handshake reply, badAuthToken on the socket and
        badSocketAuthToken on the server.
        """
        error = AuthenticateMiddlewareError("revoked")
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE,
                                   lambda req, next: next(error, True))
        server_bad = []
        self.server.on("badSocketAuthToken", lambda s, info: server_bad.append((s, info)))
        conn = connect(self.server)
        socket_bad = []
        conn.socket.on("badAuthToken", socket_bad.append)
        status = conn.handshake(self.bob)
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(status["authError"]["name"], "AuthenticateMiddlewareError")
        kinds = [p.get("event", "reply") for p in conn.sent if isinstance(p, dict)]
        self.assertEqual(kinds, ["#removeAuthToken", "reply"])
        self.assertEqual(conn.sent[0], {"event": "#removeAuthToken", "data": None})
        self.assertEqual(socket_bad, [{"authError": error, "signedAuthToken": self.bob}])
        self.assertEqual(server_bad, [(conn.socket, {"authError": error,
                                                     "signedAuthToken": self.bob})])
        self.assertIsNone(conn.socket.signed_auth_token)
        self.assertEqual(conn.state, "open")

    def test_softBlockOnAuthenticate(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE,
                                   lambda req, next: next(AuthenticateMiddlewareError("no")))
        conn = self.open()
        reply = self.successResultOf(conn.authenticate(self.bob))
        self.assertEqual(reply, {"isAuthenticated": False, "authError": {
            "message": "no", "name": "AuthenticateMiddlewareError"}})
        self.assertEqual(conn.sent_events("#removeAuthToken"), [])
        self.assertEqual(conn.socket.auth_state, "unauthenticated")

    def test_badTokenBlockOnAuthenticate(self):
        """
        C{#authenticate} with C{next(err, True)}: C{#removeAuthToken}, then an
        error reply carrying the status as data.
        """
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE,
                                   lambda req, next: next(AuthenticateMiddlewareError("bad"), True))
        bad = []
        self.server.on("badSocketAuthToken", lambda s, info: bad.append(info["signedAuthToken"]))
        conn = self.open()
        conn.pop_sent()
        failure = self.failureResultOf(conn.authenticate(self.bob))
        self.assertEqual(failure.value.name, "AuthenticateMiddlewareError")
        self.assertEqual(failure.value.data, {"isAuthenticated": False, "authError": {
            "message": "bad", "name": "AuthenticateMiddlewareError"}})
        self.assertEqual([p.get("event", "reply") for p in conn.sent],
                         ["#removeAuthToken", "reply"])
        self.assertEqual(bad, [self.bob])

    def test_asyncBlock(self):
        d = Deferred()
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, lambda req, next: d)
        conn = connect(self.server)
        reply = conn.invoke("#handshake", {"authToken": self.bob})
        self.assertNoResult(reply)
        d.errback(AuthenticateMiddlewareError("later"))
        status = self.successResultOf(reply)
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(status["authError"]["message"], "later")

    def test_silentBlock(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_AUTHENTICATE, lambda req, next: next(True))
        status = connect(self.server).handshake(self.bob)
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(status["authError"]["name"], "SilentMiddlewareBlockedError")
        self.assertEqual(status["authError"]["type"], "authenticate")
        self.assertEqual(self.middleware_warnings(), [])


# -- subscribe -------------------------------------------------------------------


class SubscribeTests(FakeCase):
    def test_req(self):
        seen = []

        def subscribe(req, next):
            seen.append((req.type, req.socket, req.channel, req.data, req.wait_for_auth,
                         req.auth_token_expired_error))
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE, subscribe)
        conn = self.open()
        self.assertIsNone(self.successResultOf(conn.subscribe("news", data={"foo": 123})))
        self.successResultOf(conn.subscribe("private", wait_for_auth=True))
        self.assertEqual(seen, [
            ("subscribe", conn.socket, "news", {"foo": 123}, False, None),
            ("subscribe", conn.socket, "private", None, True, None),
        ])

    def test_dataReplaceable(self):
        """Replacing C{req.data} changes what the subscribe events see."""
        def subscribe(req, next):
            req.data = {"replaced": True}
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE, subscribe)
        events = []
        self.server.on("subscription", lambda s, channel, options: events.append(options))
        conn = self.open()
        conn.socket.on("subscribe", lambda channel, options: events.append(options))
        self.successResultOf(conn.subscribe("news", data={"original": 1}))
        self.assertEqual([e["data"] for e in events], [{"replaced": True}] * 2)
        self.assertEqual(events[0]["channel"], "news")

    def test_block(self):
        error = AppError("You cannot subscribe to channel 12")
        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE,
                                   lambda req, next: next(error))
        events = []
        self.server.on("subscription", lambda *args: events.append(args))
        conn = self.open()
        failure = self.failureResultOf(conn.subscribe("news"))
        self.assertEqual(failure.value.name, "AppError")
        self.assertEqual(failure.value.message, "You cannot subscribe to channel 12")
        self.assertFalse(conn.socket.is_subscribed("news"))
        self.assertEqual(events, [])
        self.assertEqual(self.warnings, [error])
        self.successResultOf(self.server.exchange.publish("news", 1))
        self.assertEqual(publications(conn), [])

    def test_silentBlock(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE, lambda req, next: next(True))
        conn = self.open()
        failure = self.failureResultOf(conn.subscribe("news"))
        self.assertIsInstance(failure.value, SilentMiddlewareBlockedError)
        self.assertEqual(failure.value.type, "subscribe")
        self.assertEqual(self.warnings, [])

    def test_waitForAuthIsInformationOnly(self):
        """The server does not enforce waitForAuth; the middleware decides."""
        def subscribe(req, next):
            if req.wait_for_auth and req.socket.auth_token is None:
                next(AppError("log in first"))
            else:
                next()

        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE, subscribe)
        conn = self.open()
        failure = self.failureResultOf(conn.subscribe("private", wait_for_auth=True))
        self.assertEqual(failure.value.message, "log in first")
        self.successResultOf(conn.socket.set_auth_token({"username": "bob"}))
        self.assertIsNone(self.successResultOf(conn.subscribe("private", wait_for_auth=True)))
        # Without middleware, waitForAuth alone does not refuse anybody.
        self.assertIsNone(self.successResultOf(
            self.open(server=self.make_server()).subscribe("private", wait_for_auth=True)))

    def test_expiredToken(self):
        """
        After the token expired, the middleware gets
        C{req.auth_token_expired_error} (the socket is already
        deauthenticated, C{#removeAuthToken} sent).
        """
        seen = []

        def subscribe(req, next):
            seen.append(req.auth_token_expired_error)
            next(req.auth_token_expired_error)

        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE, subscribe)
        conn = self.open()
        self.successResultOf(conn.socket.set_auth_token({"username": "bob"}, expires_in=10))
        exp = conn.socket.auth_token["exp"]
        self.clock.advance(11)
        failure = self.failureResultOf(conn.subscribe("news"))
        self.assertIsInstance(seen[0], AuthTokenExpiredError)
        self.assertEqual(seen[0].expiry, exp)
        self.assertEqual(failure.value.name, "AuthTokenExpiredError")
        self.assertEqual(failure.value.message, "The socket auth token has expired")
        self.assertEqual(failure.value.expiry, exp)
        self.assertEqual(len(conn.sent_events("#removeAuthToken")), 1)
        self.assertEqual(conn.socket.auth_state, "unauthenticated")

    def test_waitForAuthWithExpiredTokenSkipsMiddleware(self):
        calls = []
        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE,
                                   lambda req, next: (calls.append(req), next()))
        conn = self.open()
        self.successResultOf(conn.socket.set_auth_token({"username": "bob"}, expires_in=10))
        self.clock.advance(11)
        failure = self.failureResultOf(conn.subscribe("private", wait_for_auth=True))
        self.assertIsInstance(failure.value, AuthTokenExpiredError)
        self.assertEqual(calls, [])
        self.assertFalse(conn.socket.is_subscribed("private"))


# -- publishIn -------------------------------------------------------------------


class PublishInTests(FakeCase):
    def setUp(self):
        FakeCase.setUp(self)
        self.subscriber = self.open()
        self.successResultOf(self.subscriber.subscribe("news"))
        self.publisher = self.open()

    def test_req(self):
        seen = []

        def publish_in(req, next):
            seen.append((req.type, req.socket, req.channel, req.data, req.ack_data,
                         req.auth_token_expired_error))
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN, publish_in)
        self.successResultOf(self.publisher.publish("news", {"text": "hi"}))
        self.assertEqual(seen, [("publishIn", self.publisher.socket, "news", {"text": "hi"},
                                 None, None)])
        self.assertEqual(publications(self.subscriber), [{"text": "hi"}])

    def test_ackData(self):
        def publish_in(req, next):
            req.ack_data = {"accepted": 1}
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN, publish_in)
        self.assertEqual(self.successResultOf(self.publisher.publish("news", 1)),
                         {"accepted": 1})
        self.assertEqual(publications(self.subscriber), [1])

    def test_ackDataOnBlock(self):
        """A block still returns C{req.ack_data}, next to the error."""
        error = AppError("too loud")

        def publish_in(req, next):
            req.ack_data = {"retry_in": 5}
            next(error)

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN, publish_in)
        cid = self.publisher.next_cid() + 1
        failure = self.failureResultOf(self.publisher.publish("news", 1))
        self.assertEqual(failure.value.name, "AppError")
        self.assertEqual(failure.value.data, {"retry_in": 5})
        self.assertEqual(self.publisher.reply_to(cid), {
            "rid": cid, "error": {"message": "too loud", "name": "AppError"},
            "data": {"retry_in": 5}})
        self.assertEqual(publications(self.subscriber), [])
        self.assertEqual(self.warnings, [error])

    def test_dataReplaceable(self):
        def publish_in(req, next):
            req.data = {"censored": True}
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN, publish_in)
        local = []
        self.publisher.socket.on("#publish", local.append)
        self.successResultOf(self.publisher.publish("news", {"rude": "words"}))
        self.assertEqual(publications(self.subscriber), [{"censored": True}])
        self.assertEqual(local, [{"channel": "news", "data": {"censored": True}}])

    def test_silentBlock(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN, lambda req, next: next(True))
        failure = self.failureResultOf(self.publisher.publish("news", 1))
        self.assertIsInstance(failure.value, SilentMiddlewareBlockedError)
        self.assertEqual(failure.value.type, "publishIn")
        self.assertEqual(self.warnings, [])
        self.assertEqual(publications(self.subscriber), [])

    def test_notRunWhenClientPublishDisabled(self):
        server = self.make_server(allow_client_publish=False)
        calls = []
        server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN,
                              lambda req, next: (calls.append(req), next()))
        conn = self.open(server=server)
        failure = self.failureResultOf(conn.publish("news", 1))
        self.assertIsInstance(failure.value, InvalidActionError)
        self.assertEqual(failure.value.message, "Client publish feature is disabled")
        self.assertEqual(calls, [])

    def test_serverPublishSkipsPublishIn(self):
        calls = []
        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN,
                                   lambda req, next: (calls.append(req), next(AppError("x"))))
        self.successResultOf(self.server.exchange.publish("news", "from server"))
        self.assertEqual(calls, [])
        self.assertEqual(publications(self.subscriber), ["from server"])

    def test_expiredToken(self):
        seen = []
        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN,
                                   lambda req, next: (seen.append(req.auth_token_expired_error),
                                                      next()))
        self.successResultOf(self.publisher.socket.set_auth_token({"u": 1}, expires_in=10))
        self.clock.advance(11)
        self.successResultOf(self.publisher.publish("news", 1))
        self.assertIsInstance(seen[0], AuthTokenExpiredError)
        self.assertEqual(len(self.publisher.sent_events("#removeAuthToken")), 1)


# -- publishOut ------------------------------------------------------------------


class PublishOutTests(FakeCase):
    def setUp(self):
        FakeCase.setUp(self)
        self.conns = [self.open() for _ in range(3)]
        for conn in self.conns:
            self.successResultOf(conn.subscribe("news"))

    def test_reqPerRecipient(self):
        seen = []

        def publish_out(req, next):
            seen.append((req.type, req.socket, req.channel, req.data,
                         req.auth_token_expired_error))
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_OUT, publish_out)
        self.successResultOf(self.conns[0].publish("news", {"n": 1}))
        self.assertEqual(seen, [("publishOut", c.socket, "news", {"n": 1}, None)
                                for c in self.conns])

    def test_copyPerRecipient(self):
        """Changes to C{req.data} reach only that recipient."""
        marked = self.conns[1].socket

        def publish_out(req, next):
            if req.socket is marked:
                req.data["secret"] = "for you"
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_OUT, publish_out)
        original = {"n": 1}
        self.successResultOf(self.server.exchange.publish("news", original))
        self.assertEqual([publications(c) for c in self.conns],
                         [[{"n": 1}], [{"n": 1, "secret": "for you"}], [{"n": 1}]])
        self.assertEqual(original, {"n": 1})

    def test_replaceData(self):
        def publish_out(req, next):
            req.data = "replaced for " + req.socket.id
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_OUT, publish_out)
        self.successResultOf(self.server.exchange.publish("news", "x"))
        for conn in self.conns:
            self.assertEqual(publications(conn), ["replaced for " + conn.socket.id])

    def test_blockSkipsOnlyThatRecipient(self):
        blocked = self.conns[2].socket
        error = AppError("not for you")

        def publish_out(req, next):
            next(error if req.socket is blocked else None)

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_OUT, publish_out)
        self.assertIsNone(self.successResultOf(self.conns[0].publish("news", "hi")))
        self.assertEqual([publications(c) for c in self.conns], [["hi"], ["hi"], []])
        self.assertEqual(self.warnings, [error])
        self.assertEqual(self.conns[2].state, "open")
        self.assertTrue(blocked.is_subscribed("news"))

    def test_silentBlockNoWarning(self):
        blocked = self.conns[0].socket
        self.server.add_middleware(
            SCServer.MIDDLEWARE_PUBLISH_OUT,
            lambda req, next: next(True if req.socket is blocked else None))
        self.successResultOf(self.server.exchange.publish("news", "hi"))
        self.assertEqual([publications(c) for c in self.conns], [[], ["hi"], ["hi"]])
        self.assertEqual(self.warnings, [])

    def test_warningsDisabled(self):
        server = self.make_server(middleware_emit_warnings=False)
        server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_OUT,
                              lambda req, next: next(AppError("no")))
        conn = self.open(server=server)
        self.successResultOf(conn.subscribe("news"))
        self.successResultOf(server.exchange.publish("news", 1))
        self.assertEqual(publications(conn), [])
        self.assertEqual(self.warnings, [])

    def test_async(self):
        """A Deferred-returning publishOut delays that recipient's delivery."""
        pending = {}

        def publish_out(req, next):
            d = pending[req.socket] = Deferred()
            return d

        self.server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_OUT, publish_out)
        self.successResultOf(self.server.exchange.publish("news", 1))
        self.assertEqual([publications(c) for c in self.conns], [[], [], []])
        pending[self.conns[1].socket].callback(None)
        pending[self.conns[2].socket].errback(AppError("no"))
        self.assertEqual([publications(c) for c in self.conns], [[], [1], []])


# -- emit --------------------------------------------------------------------------


class EmitTests(FakeCase):
    def setUp(self):
        FakeCase.setUp(self)
        self.calls = []
        self.handled = []
        self.server.on("connection", self.on_connection)

    def on_connection(self, socket, status):
        socket.on("chat", lambda data, respond: (self.handled.append(data), respond(None, "ok")))
        socket.on("#custom", lambda data, respond: self.handled.append(("#custom", data)))

    def record(self, req, next):
        self.calls.append((req.type, req.socket, req.event, req.data,
                           req.auth_token_expired_error))
        next()

    def test_req(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, self.record)
        conn = self.open()
        self.assertEqual(self.successResultOf(conn.invoke("chat", {"text": "hi"})), "ok")
        conn.emit("chat", "no reply wanted")
        self.assertEqual(self.calls, [
            ("emit", conn.socket, "chat", {"text": "hi"}, None),
            ("emit", conn.socket, "chat", "no reply wanted", None),
        ])
        self.assertEqual(self.handled, [{"text": "hi"}, "no reply wanted"])

    def test_notForHashEvents(self):
        """
        Protocol events (C{#...}), including unknown ones, skip the emit
        middleware; so do the socket's own reserved names.
        """
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, self.record)
        conn = self.open(token=None)
        self.successResultOf(conn.subscribe("news"))
        self.successResultOf(conn.publish("news", 1))
        conn.unsubscribe("news")
        conn.emit("#custom", 5)
        conn.emit("message", "x", cid=True)
        conn.deauthenticate()
        self.failureResultOf(conn.authenticate("not.a.token"))
        self.assertEqual(self.calls, [])
        self.assertEqual(self.handled, [("#custom", 5)])

    def test_handshakeSkipsEmitMiddleware(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, self.record)
        self.open()
        self.assertEqual(self.calls, [])

    def test_blockWithCid(self):
        error = AppError("not allowed to chat")
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, lambda req, next: next(error))
        conn = self.open()
        failure = self.failureResultOf(conn.invoke("chat", "hi"))
        self.assertEqual(failure.value.name, "AppError")
        self.assertEqual(failure.value.message, "not allowed to chat")
        self.assertEqual(self.handled, [])
        self.assertEqual(self.warnings, [error])

    def test_blockWithoutCid(self):
        """Without a cid nothing is sent back; the handler is not called."""
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT,
                                   lambda req, next: next(AppError("no")))
        conn = self.open()
        conn.pop_sent()
        conn.emit("chat", "hi")
        self.assertEqual(conn.sent, [])
        self.assertEqual(self.handled, [])
        self.assertEqual(conn.state, "open")

    def test_silentBlock(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, lambda req, next: next(True))
        conn = self.open()
        failure = self.failureResultOf(conn.invoke("chat", "hi"))
        self.assertIsInstance(failure.value, SilentMiddlewareBlockedError)
        self.assertEqual(failure.value.type, "emit")
        self.assertEqual(self.warnings, [])

    def test_dataReplaceable(self):
        def emit(req, next):
            req.data = {"wrapped": req.data}
            next()

        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, emit)
        conn = self.open()
        self.successResultOf(conn.invoke("chat", "hi"))
        self.assertEqual(self.handled, [{"wrapped": "hi"}])

    def test_blockByEvent(self):
        """Middleware can pick events: block one, allow the others."""
        def emit(req, next):
            next(AppError("admin only") if req.event == "shutdown" else None)

        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, emit)
        conn = self.open()
        self.assertEqual(self.successResultOf(conn.invoke("chat", 1)), "ok")
        self.assertEqual(self.failureResultOf(conn.invoke("shutdown")).value.message,
                         "admin only")

    def test_expiredToken(self):
        self.server.add_middleware(SCServer.MIDDLEWARE_EMIT, self.record)
        conn = self.open()
        self.successResultOf(conn.socket.set_auth_token({"u": 1}, expires_in=5))
        self.clock.advance(6)
        conn.emit("chat", 1)
        self.assertIsInstance(self.calls[0][4], AuthTokenExpiredError)
        self.assertEqual(self.calls[0][4].message, "The socket auth token has expired")

    def test_warningsDisabled(self):
        server = self.make_server(middleware_emit_warnings=False)
        server.add_middleware(SCServer.MIDDLEWARE_EMIT, lambda req, next: next(AppError("no")))
        conn = self.open(server=server)
        self.failureResultOf(conn.invoke("chat", 1))
        self.assertEqual(self.warnings, [])


# -- registration ------------------------------------------------------------------


class RegistrationTests(SynchronousTestCase):
    def test_unknownType(self):
        server = make_server()
        with self.assertRaises(InvalidArgumentsError) as caught:
            server.add_middleware("publish", lambda req, next: next())
        self.assertEqual(caught.exception.message, 'Middleware type "publish" is not supported')
        self.assertRaises(InvalidArgumentsError, server.remove_middleware, "nope",
                          lambda req, next: next())

    def test_constants(self):
        self.assertEqual(
            [SCServer.MIDDLEWARE_HANDSHAKE_WS, SCServer.MIDDLEWARE_HANDSHAKE_SC,
             SCServer.MIDDLEWARE_AUTHENTICATE, SCServer.MIDDLEWARE_SUBSCRIBE,
             SCServer.MIDDLEWARE_PUBLISH_IN, SCServer.MIDDLEWARE_PUBLISH_OUT,
             SCServer.MIDDLEWARE_EMIT],
            ["handshakeWS", "handshakeSC", "authenticate", "subscribe", "publishIn",
             "publishOut", "emit"])

    def test_removeStopsIt(self):
        server = make_server()
        conn = connect(server)
        conn.handshake()
        conn.socket.on("chat", lambda data, respond: respond(None, "ok"))

        def block(req, next):
            next(AppError("no"))

        server.add_middleware(server.MIDDLEWARE_EMIT, block)
        self.failureResultOf(conn.invoke("chat"))
        server.remove_middleware(server.MIDDLEWARE_EMIT, block)
        self.assertEqual(self.successResultOf(conn.invoke("chat")), "ok")

    def test_orderAndFirstBlockWins(self):
        server = make_server()
        calls = []
        server.add_middleware(server.MIDDLEWARE_SUBSCRIBE,
                              lambda req, next: (calls.append(1), next()))
        server.add_middleware(server.MIDDLEWARE_SUBSCRIBE,
                              lambda req, next: (calls.append(2), next(AppError("2"))))
        server.add_middleware(server.MIDDLEWARE_SUBSCRIBE,
                              lambda req, next: (calls.append(3), next()))
        conn = connect(server)
        conn.handshake()
        self.assertEqual(self.failureResultOf(conn.subscribe("x")).value.message, "2")
        self.assertEqual(calls, [1, 2])


class WarningsDisabledTests(FakeCase):
    """C{middleware_emit_warnings=False}: blocks of every type stay silent."""

    options = {"middleware_emit_warnings": False}

    def test_everyInSocketType(self):
        bob = self.token_for({"username": "bob"})

        def block(req, next):
            next(AppError("blocked " + req.type))

        for type in (SCServer.MIDDLEWARE_HANDSHAKE_SC, SCServer.MIDDLEWARE_AUTHENTICATE,
                     SCServer.MIDDLEWARE_SUBSCRIBE, SCServer.MIDDLEWARE_PUBLISH_IN,
                     SCServer.MIDDLEWARE_PUBLISH_OUT, SCServer.MIDDLEWARE_EMIT):
            self.server.add_middleware(type, block)
        conn = connect(self.server)
        self.assertRaises(Exception, conn.handshake, bob)
        self.server.remove_middleware(SCServer.MIDDLEWARE_HANDSHAKE_SC, block)
        conn = connect(self.server)
        status = conn.handshake(bob)
        self.assertEqual(status["authError"]["message"], "blocked authenticate")
        self.assertEqual(self.failureResultOf(conn.subscribe("a")).value.message,
                         "blocked subscribe")
        self.assertEqual(self.failureResultOf(conn.publish("a", 1)).value.message,
                         "blocked publishIn")
        self.assertEqual(self.failureResultOf(conn.invoke("chat")).value.message,
                         "blocked emit")
        self.server.remove_middleware(SCServer.MIDDLEWARE_SUBSCRIBE, block)
        self.successResultOf(conn.subscribe("a"))
        self.successResultOf(self.server.exchange.publish("a", 1))
        self.assertEqual(publications(conn), [])
        self.assertEqual(self.middleware_warnings(), [])
