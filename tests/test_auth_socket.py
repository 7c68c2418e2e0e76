"""
Authentication through sockets: tokens at the handshake, C{#authenticate},
C{set_auth_token}, C{deauthenticate}, expiry, and the auth events, without a
network (L{scserver.testing}), against the frames of the recorded v14
transcripts 08, 09, 10 and 10b.
"""

import os
import sys

from twisted.internet import defer, utils
from twisted.trial.unittest import SynchronousTestCase, TestCase

from scserver.auth import JWTAuthEngine
from scserver.errors import (
    AuthTokenExpiredError,
    AuthTokenInvalidError,
    InvalidArgumentsError,
    SocketProtocolError,
)
from scserver.testing import connect, make_server
from tests._helpers import NOW, b64url, ec_pair, hs256_token

KEY = "auth-socket-test-key"
START = float(NOW)


def sign(payload, key=KEY, now=START, **options):
    options.setdefault("algorithm", "HS256")
    return JWTAuthEngine(now=lambda: now).sign_token(payload, key, options)


class Recorder:
    """Records the auth events of a server and of its sockets, in order."""

    def __init__(self, server):
        self.events = []
        for name in ("authentication", "deauthentication", "authenticationStateChange",
                     "badSocketAuthToken"):
            server.on(name, lambda socket, *args, name=name: self.events.append(
                ("server", name) + args))
        server.on("handshake", self._watch)

    def _watch(self, socket):
        for name in ("authenticate", "deauthenticate", "authStateChange", "badAuthToken",
                     "authTokenSigned"):
            socket.on(name, lambda *args, name=name: self.events.append(("socket", name) + args))

    def names(self):
        return [(side, name) for side, name, *_ in self.events]


class AuthTestMixin:
    def make(self, **options):
        options.setdefault("auth_key", KEY)
        self.server = make_server(**options)
        self.clock = self.server.reactor
        self.clock.advance(START)
        self.recorder = Recorder(self.server)
        self.warnings = []
        self.server.on("warning", self.warnings.append)
        return self.server


class HandshakeTokenTests(AuthTestMixin, SynchronousTestCase):
    def setUp(self):
        self.make()

    def test_noToken(self):
        conn = connect(self.server)
        status = conn.handshake()
        self.assertEqual(set(status), {"id", "pingTimeout", "isAuthenticated"})
        self.assertIs(status["isAuthenticated"], False)
        self.assertEqual(self.recorder.events, [])

    def test_validToken(self):
        token = sign({"username": "bob", "exp": START + 100})
        conn = connect(self.server)
        status = conn.handshake(token)
        self.assertEqual(list(status), ["id", "pingTimeout", "isAuthenticated"])
        self.assertIs(status["isAuthenticated"], True)
        self.assertEqual(conn.sent_events(), [])
        socket = conn.socket
        self.assertEqual(socket.auth_state, socket.AUTHENTICATED)
        self.assertEqual(socket.auth_token["username"], "bob")
        self.assertEqual(socket.get_auth_token(), socket.auth_token)
        self.assertEqual(socket.signed_auth_token, token)
        self.assertEqual(self.recorder.names(), [
            ("socket", "authStateChange"), ("server", "authenticationStateChange"),
            ("socket", "authenticate"), ("server", "authentication")])
        change = self.recorder.events[0][2]
        self.assertEqual(change, {"oldState": "unauthenticated", "newState": "authenticated",
                                  "authToken": socket.auth_token})

    def assertBadToken(self, token, message, name="AuthTokenInvalidError"):
        conn = connect(self.server)
        status = conn.handshake(token)
        sent = conn.sent
        self.assertEqual(sent[0], {"event": "#removeAuthToken", "data": None})
        self.assertEqual(list(sent[1]["data"]),
                         ["id", "pingTimeout", "authError", "isAuthenticated"])
        self.assertEqual(status["authError"]["message"], message)
        self.assertEqual(status["authError"]["name"], name)
        self.assertIs(status["isAuthenticated"], False)
        self.assertEqual(conn.state, "open")
        names = self.recorder.names()
        self.assertIn(("socket", "badAuthToken"), names)
        self.assertIn(("server", "badSocketAuthToken"), names)
        info = [e for e in self.recorder.events if e[1] == "badSocketAuthToken"][0][2]
        self.assertEqual(info["signedAuthToken"], token)
        self.assertEqual(info["authError"].name, name)
        self.assertTrue(any(getattr(w, "name", None) == name for w in self.warnings))
        return status

    def test_expiredToken(self):
        token = sign({"username": "bob", "exp": START - 10})
        status = self.assertBadToken(token, "jwt expired", "AuthTokenExpiredError")
        self.assertEqual(status["authError"]["expiry"], "2026-11-25T20:47:58.000Z")

    def test_wrongKey(self):
        self.assertBadToken(sign({"username": "bob"}, key="other"), "invalid signature")

    def test_malformed(self):
        self.assertBadToken("garbage-token", "jwt malformed")

    def test_oversize(self):
        token = sign({"blob": "x" * 9000})
        conn = connect(self.server)
        status = conn.handshake(token)
        self.assertEqual(status["authError"]["name"], "AuthTokenInvalidError")
        self.assertIn("too long", status["authError"]["message"])

    def test_notBefore(self):
        """A token that is not active yet is not a bad token: it is kept."""
        token = sign({"username": "bob"}, not_before=60)
        conn = connect(self.server)
        status = conn.handshake(token)
        self.assertEqual(conn.sent_events(), [])
        self.assertEqual(status["authError"]["name"], "AuthTokenNotBeforeError")
        self.assertEqual(status["authError"]["message"], "jwt not active")
        self.assertIn("date", status["authError"])
        self.assertNotIn(("socket", "badAuthToken"), self.recorder.names())

    def test_nullTokenIsNoToken(self):
        status = connect(self.server).handshake(None)
        self.assertNotIn("authError", status)


class AuthenticateTests(AuthTestMixin, SynchronousTestCase):
    def setUp(self):
        self.make()
        self.conn = connect(self.server)
        self.conn.handshake()
        self.conn.pop_sent()

    def test_valid(self):
        token = sign({"username": "alice", "exp": START + 100})
        result = self.successResultOf(self.conn.authenticate(token))
        self.assertEqual(result, {"isAuthenticated": True, "authError": None})
        self.assertEqual(self.conn.sent_events(), [])
        self.assertEqual(self.conn.socket.auth_token["username"], "alice")

    def test_garbage(self):
        failure = self.failureResultOf(self.conn.authenticate("garbage-token"))
        self.assertEqual(self.conn.sent[0], {"event": "#removeAuthToken", "data": None})
        self.assertEqual(self.conn.sent[1]["error"], {"message": "jwt malformed",
                                                      "name": "AuthTokenInvalidError"})
        self.assertEqual(self.conn.sent[1]["data"], {
            "isAuthenticated": False,
            "authError": {"message": "jwt malformed", "name": "AuthTokenInvalidError"}})
        self.assertIsInstance(failure.value, AuthTokenInvalidError)

    def test_notAString(self):
        failure = self.failureResultOf(self.conn.authenticate({"a": 1}))
        self.assertEqual(failure.value.name, "AuthTokenError")
        self.assertEqual(failure.value.message, "Invalid token format - Token must be a string")
        failure = self.failureResultOf(self.conn.authenticate(None))
        self.assertEqual(failure.value.message, "jwt must be provided")

    def test_switchUsers(self):
        """
        Authenticating as another user fires a second authenticate event and
        no state change (checklist case 4).
        """
        self.successResultOf(self.conn.authenticate(sign({"username": "bob"})))
        self.successResultOf(self.conn.authenticate(sign({"username": "alice"})))
        names = self.recorder.names()
        self.assertEqual(names.count(("socket", "authenticate")), 2)
        self.assertEqual(names.count(("socket", "authStateChange")), 1)
        self.assertNotIn(("socket", "deauthenticate"), names)

    def test_clientRemoveAuthToken(self):
        self.successResultOf(self.conn.authenticate(sign({"username": "bob"})))
        self.conn.pop_sent()
        del self.recorder.events[:]
        self.conn.deauthenticate()
        socket = self.conn.socket
        self.assertEqual(socket.auth_state, socket.UNAUTHENTICATED)
        self.assertIsNone(socket.auth_token)
        self.assertEqual(self.conn.pop_sent(), [])
        self.assertEqual(self.recorder.names(), [
            ("socket", "authStateChange"), ("server", "authenticationStateChange"),
            ("socket", "deauthenticate"), ("server", "deauthentication")])
        self.assertEqual(self.recorder.events[0][2],
                         {"oldState": "authenticated", "newState": "unauthenticated"})
        self.assertEqual(self.recorder.events[2][2]["username"], "bob")

    def test_serverDeauthenticate(self):
        self.successResultOf(self.conn.authenticate(sign({"username": "bob"})))
        self.conn.pop_sent()
        self.conn.socket.deauthenticate()
        self.assertEqual(self.conn.pop_sent(raw=True), ['{"event":"#removeAuthToken","data":null}'])
        self.assertIsNone(self.conn.socket.auth_token)


class SetAuthTokenTests(AuthTestMixin, SynchronousTestCase):
    def setUp(self):
        self.make()
        self.conn = connect(self.server)
        self.socket = self.conn.socket
        self.conn.handshake()
        self.conn.pop_sent()

    def test_loginSendsTokenBeforeReply(self):
        def login(data, respond):
            self.socket.set_auth_token({"username": data["username"]})
            respond(None, "ok")

        self.socket.on("login", login)
        self.assertEqual(self.successResultOf(self.conn.invoke("login", {"username": "alice"})),
                         "ok")
        set_token, reply = self.conn.sent
        self.assertEqual(set_token["event"], "#setAuthToken")
        self.assertEqual(list(set_token), ["event", "data"])
        self.assertNotIn("rid", set_token)
        self.assertEqual(reply["data"], "ok")
        token = set_token["data"]["token"]
        payload = JWTAuthEngine(now=lambda: START).verify_token(
            token, KEY, {"algorithms": ["HS256"]})
        self.assertEqual(payload, {"username": "alice", "iat": int(START),
                                   "exp": int(START) + 86400})
        self.assertEqual(self.socket.auth_token, payload)
        self.assertEqual(self.socket.signed_auth_token, token)
        self.assertEqual(self.recorder.names(), [
            ("socket", "authTokenSigned"), ("socket", "authStateChange"),
            ("server", "authenticationStateChange"), ("socket", "authenticate"),
            ("server", "authentication")])

    def test_expiresIn(self):
        token = self.successResultOf(self.socket.set_auth_token({"u": 1}, expires_in=3600))
        self.assertEqual(self.socket.auth_token["exp"], int(START) + 3600)
        self.assertEqual(self.conn.sent_events("#setAuthToken")[0]["data"]["token"], token)

    def test_payloadExpWins(self):
        exp = int(START) + 10 * 86400
        self.successResultOf(self.socket.set_auth_token({"u": 1, "exp": exp}, expires_in=1000))
        self.assertEqual(self.socket.auth_token["exp"], exp)

    def test_stateIsSetOnceSigned(self):
        """
        With an engine that signs later, the socket is authenticated with
        the token only once it is signed (an event handled meanwhile does
        not see a token that may never exist).
        """
        self.server.set_auth_engine(SlowSigner())
        d = self.socket.set_auth_token({"u": 1})
        self.assertEqual(self.socket.auth_state, self.socket.UNAUTHENTICATED)
        self.assertIsNone(self.socket.auth_token)
        self.assertNoResult(d)
        self.assertEqual(self.conn.sent_events(), [])
        self.server.auth_engine.pending.callback("signed.token.value")
        self.assertEqual(self.successResultOf(d), "signed.token.value")
        self.assertEqual(self.socket.auth_state, self.socket.AUTHENTICATED)
        self.assertEqual(self.socket.auth_token["u"], 1)
        self.assertEqual(self.conn.sent_events("#setAuthToken")[0]["data"],
                         {"token": "signed.token.value"})

    def test_deauthenticatedWhileSigningSendsNothing(self):
        """
        deauthenticate() while signing: the client gets C{#removeAuthToken}
        and no C{#setAuthToken} afterwards (it would believe itself
        authenticated).
        """
        self.server.set_auth_engine(SlowSigner())
        self.socket.set_auth_token({"u": 1})
        self.socket.deauthenticate()
        self.server.auth_engine.pending.callback("signed.token.value")
        self.assertEqual([e["event"] for e in self.conn.sent_events()], ["#removeAuthToken"])

    def test_deauthenticateWhileSigning(self):
        """deauthenticate() while signing: the signed token does not re-authenticate."""
        self.server.set_auth_engine(SlowSigner())
        d = self.socket.set_auth_token({"u": 1})
        self.socket.deauthenticate()
        self.server.auth_engine.pending.callback("signed.token.value")
        self.successResultOf(d)
        self.assertEqual(self.socket.auth_state, self.socket.UNAUTHENTICATED)
        self.assertIsNone(self.socket.auth_token)
        self.assertIsNone(self.socket.signed_auth_token)

    def test_algorithmRefused(self):
        errors = []
        self.socket.on("error", errors.append)
        self.failureResultOf(self.socket.set_auth_token({"u": 1}, algorithm="none"),
                             InvalidArgumentsError)
        self.assertEqual([type(e) for e in errors], [InvalidArgumentsError])
        self.assertIsNone(self.socket.auth_token)

    def test_signFailureCloses4002(self):
        errors = []
        self.socket.on("error", errors.append)
        d = self.socket.set_auth_token({"iss": "me"}, issuer="someone")
        self.failureResultOf(d)
        self.assertEqual(self.conn.closed[0], 4002)
        self.assertIn(SocketProtocolError, [type(e) for e in errors])

    def test_renewalAuthenticatesAgainWithoutStateChange(self):
        self.socket.set_auth_token({"u": 1})
        self.socket.set_auth_token({"u": 2})
        names = self.recorder.names()
        self.assertEqual(names.count(("socket", "authenticate")), 2)
        self.assertEqual(names.count(("socket", "authStateChange")), 1)
        self.assertEqual(len(self.conn.sent_events("#setAuthToken")), 2)


class SlowSigner(JWTAuthEngine):
    """An auth engine whose signatures arrive when the test says so."""

    def sign_token(self, payload, key, options):
        self.pending = defer.Deferred()
        return self.pending


class ExpiryTests(AuthTestMixin, SynchronousTestCase):
    def setUp(self):
        self.make()
        self.conn = connect(self.server)
        self.socket = self.conn.socket
        self.conn.handshake()
        self.socket.set_auth_token({"u": 1}, expires_in=10)
        self.conn.pop_sent()
        del self.recorder.events[:]

    def test_expiryOnEvent(self):
        seen = []

        def emit(req, next):
            seen.append(req.auth_token_expired_error)
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_EMIT, emit)
        self.clock.advance(11)
        self.conn.emit("anything", 1)
        self.assertEqual(self.conn.sent_events(), [{"event": "#removeAuthToken", "data": None}])
        self.assertIsInstance(seen[0], AuthTokenExpiredError)
        self.assertEqual(seen[0].message, "The socket auth token has expired")
        self.assertEqual(seen[0].expiry, int(START) + 10)
        self.assertEqual(self.socket.auth_state, self.socket.UNAUTHENTICATED)
        self.assertIn(("socket", "deauthenticate"), self.recorder.names())

    def test_notExpiredYet(self):
        self.clock.advance(9)
        self.conn.emit("anything", 1)
        self.assertEqual(self.conn.sent_events(), [])
        self.assertEqual(self.socket.auth_state, self.socket.AUTHENTICATED)

    def test_expiryOnPong(self):
        self.clock.advance(8)
        self.conn.pong(2)
        self.clock.advance(3)
        self.conn.pong(2)
        self.assertIn({"event": "#removeAuthToken", "data": None}, self.conn.sent)
        self.assertIsNone(self.socket.auth_token)

    def test_expiryOnAnyInboundMessage(self):
        """A reply from the client (not an event) also triggers the check."""
        self.clock.advance(9)
        d = self.socket.invoke("question", 1)
        cid = self.conn.sent_events("question")[0]["cid"]
        self.clock.advance(2)
        self.conn.reply(cid, "answer")
        self.assertEqual(self.successResultOf(d), "answer")
        self.assertIn({"event": "#removeAuthToken", "data": None}, self.conn.sent)
        self.assertIsNone(self.socket.auth_token)

    def test_wholeBatchSeesTheExpiry(self):
        seen = []
        self.server.add_middleware(self.server.MIDDLEWARE_EMIT, lambda req, next: (
            seen.append(req.auth_token_expired_error), next()))
        self.clock.advance(11)
        self.conn.send([{"event": "a", "data": 1}, {"event": "b", "data": 2}])
        self.assertEqual([type(e) for e in seen], [AuthTokenExpiredError] * 2)
        self.assertEqual(len(self.conn.sent_events("#removeAuthToken")), 1)

    def test_waitForAuthSubscribeWithExpiredToken(self):
        calls = []
        self.server.add_middleware(self.server.MIDDLEWARE_SUBSCRIBE,
                                   lambda req, next: calls.append(req))
        self.clock.advance(11)
        failure = self.failureResultOf(self.conn.subscribe("private", wait_for_auth=True))
        self.assertEqual(failure.value.name, "AuthTokenExpiredError")
        self.assertEqual(failure.value.expiry, int(START) + 10)
        self.assertEqual(calls, [])
        self.assertEqual(self.socket.subscriptions(), [])


class AsymmetricKeyTests(AuthTestMixin, SynchronousTestCase):
    def setUp(self):
        self.private_pem, self.public_pem = ec_pair()
        server = make_server(auth_key=None, auth_private_key=self.private_pem,
                             auth_public_key=self.public_pem, auth_algorithm="ES256")
        server.reactor.advance(START)
        self.server = server

    def test_roundTrip(self):
        conn = connect(self.server)
        conn.handshake()
        token = self.successResultOf(conn.socket.set_auth_token({"u": 1}))
        other = connect(self.server)
        self.assertIs(other.handshake(token)["isAuthenticated"], True)

    def test_hmacWithThePublicKeyIsRefused(self):
        forged = hs256_token({"alg": "HS256", "typ": "JWT"}, {"u": "evil"}, self.public_pem)
        status = connect(self.server).handshake(forged)
        self.assertIs(status["isAuthenticated"], False)
        self.assertEqual(status["authError"]["name"], "AuthTokenInvalidError")

    def test_algNoneIsRefused(self):
        unsigned = b64url({"alg": "none", "typ": "JWT"}) + "." + b64url({"u": "evil"}) + "."
        status = connect(self.server).handshake(unsigned)
        self.assertIs(status["isAuthenticated"], False)


_CHILD = r"""
import sys
from twisted.internet.task import Clock
from scserver.testing import connect, make_server
clock = Clock()
clock.advance(float(sys.argv[2]))
server = make_server(clock=clock, auth_key=sys.argv[1])
conn = connect(server)
conn.handshake()
print(conn.socket.set_auth_token({"username": "from-another-process"}).result)
"""


class CrossProcessTests(TestCase):
    """A token signed by one server process verifies in another with the same key."""

    timeout = 60

    @defer.inlineCallbacks
    def test_tokenFromAnotherProcess(self):
        import time
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", _CHILD, "shared-process-key", str(time.time())], env=env)
        self.assertEqual(code, 0, err)
        token = out.decode().strip()
        self.assertEqual(token.count("."), 2)

        accepted = make_server(auth_key="shared-process-key")
        accepted.reactor.advance(time.time())
        status = connect(accepted).handshake(token)
        self.assertIs(status["isAuthenticated"], True)

        refused = make_server(auth_key="another-key")
        refused.reactor.advance(time.time())
        status = connect(refused).handshake(token)
        self.assertIs(status["isAuthenticated"], False)
        self.assertEqual(status["authError"]["message"], "invalid signature")


class PendingAuthenticateMiddlewareTests(AuthTestMixin, SynchronousTestCase):
    """
    While an asynchronous C{authenticate} middleware is deciding, the
    socket does not report the token as its own: its C{req} carries it.
    """

    def setUp(self):
        self.make()
        self.decisions = []
        self.requests = []

        def authenticate(req, next):
            self.requests.append(req)
            d = defer.Deferred()
            self.decisions.append(d)
            return d

        self.server.add_middleware(self.server.MIDDLEWARE_AUTHENTICATE, authenticate)
        self.bob = sign({"username": "bob", "exp": START + 100})

    def assertUnauthenticated(self, socket):
        self.assertIsNone(socket.auth_token)
        self.assertIsNone(socket.signed_auth_token)
        self.assertIsNone(socket.get_auth_token())
        self.assertEqual(socket.auth_state, socket.UNAUTHENTICATED)

    def test_handshakeWhileDeciding(self):
        conn = connect(self.server)
        status = conn.invoke("#handshake", {"authToken": self.bob})
        self.assertNoResult(status)
        self.assertUnauthenticated(conn.socket)
        self.assertEqual(self.requests[0].auth_token["username"], "bob")
        self.assertEqual(self.requests[0].signed_auth_token, self.bob)
        self.decisions[0].errback(InvalidArgumentsError("revoked"))
        self.assertFalse(self.successResultOf(status)["isAuthenticated"])
        self.assertUnauthenticated(conn.socket)
        self.assertEqual(self.recorder.events, [])

    def test_handshakeAllowed(self):
        conn = connect(self.server)
        status = conn.invoke("#handshake", {"authToken": self.bob})
        self.assertUnauthenticated(conn.socket)
        self.decisions[0].callback(None)
        self.assertTrue(self.successResultOf(status)["isAuthenticated"])
        self.assertEqual(conn.socket.auth_token["username"], "bob")
        self.assertEqual(conn.socket.signed_auth_token, self.bob)
        self.assertEqual(conn.socket.auth_state, conn.socket.AUTHENTICATED)

    def test_eventWhileAuthenticateDecides(self):
        """An event handled while #authenticate is pending sees no token."""
        conn = connect(self.server)
        conn.handshake()
        seen = []
        conn.socket.on("whoami", lambda data, respond: respond(
            None, seen.append((conn.socket.auth_state, conn.socket.auth_token))))
        reply = conn.authenticate(self.bob)
        self.assertNoResult(reply)
        self.assertUnauthenticated(conn.socket)
        self.successResultOf(conn.invoke("whoami"))
        self.assertEqual(seen, [("unauthenticated", None)])
        self.decisions[0].errback(InvalidArgumentsError("revoked"))
        self.assertEqual(self.successResultOf(reply)["isAuthenticated"], False)
        self.assertUnauthenticated(conn.socket)
        self.assertEqual(self.recorder.events, [])

    def test_authenticateAllowed(self):
        conn = connect(self.server)
        conn.handshake()
        reply = conn.authenticate(self.bob)
        self.decisions[0].callback(None)
        self.assertEqual(self.successResultOf(reply),
                         {"isAuthenticated": True, "authError": None})
        self.assertEqual(conn.socket.auth_token["username"], "bob")
        self.assertIn(("socket", "authenticate"), self.recorder.names())

    def test_previousTokenKeptWhileDeciding(self):
        """A socket authenticated as alice stays alice until bob is allowed."""
        conn = connect(self.server)
        conn.handshake()
        self.successResultOf(conn.socket.set_auth_token({"username": "alice"}))
        reply = conn.authenticate(self.bob)
        self.assertEqual(conn.socket.auth_token["username"], "alice")
        self.assertEqual(conn.socket.auth_state, conn.socket.AUTHENTICATED)
        self.decisions[0].errback(InvalidArgumentsError("no"))
        self.assertEqual(self.successResultOf(reply)["isAuthenticated"], True)
        self.assertEqual(conn.socket.auth_token["username"], "alice")


class RequireExpiryTests(AuthTestMixin, SynchronousTestCase):
    """The C{auth_require_expiry} option."""

    def test_defaultAcceptsTokenWithoutExp(self):
        self.make()
        status = connect(self.server).handshake(sign({"username": "bob"}))
        self.assertTrue(status["isAuthenticated"])

    def test_handshakeTokenWithoutExpRefused(self):
        self.make(auth_require_expiry=True)
        conn = connect(self.server)
        status = conn.handshake(sign({"username": "bob"}))
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(status["authError"]["name"], "AuthTokenInvalidError")
        self.assertEqual(conn.sent_events("#removeAuthToken"), [
            {"event": "#removeAuthToken", "data": None}])
        self.assertIsNone(conn.socket.auth_token)
        self.assertIn(("server", "badSocketAuthToken"), self.recorder.names())

    def test_authenticateTokenWithoutExpRefused(self):
        self.make(auth_require_expiry=True)
        conn = connect(self.server)
        conn.handshake()
        failure = self.failureResultOf(conn.authenticate(sign({"username": "bob"})))
        self.assertIsInstance(failure.value, AuthTokenInvalidError)
        self.assertIsNone(conn.socket.auth_token)

    def test_tokenWithExpAccepted(self):
        self.make(auth_require_expiry=True)
        status = connect(self.server).handshake(
            sign({"username": "bob", "exp": START + 100}))
        self.assertTrue(status["isAuthenticated"])

    def test_setAuthTokenWithoutExpRefused(self):
        self.make(auth_require_expiry=True)
        conn = connect(self.server)
        conn.handshake()
        self.server.auth_config.default_expiry = None
        self.failureResultOf(conn.socket.set_auth_token({"u": 1}), InvalidArgumentsError)
        self.assertIsNone(conn.socket.auth_token)
        self.successResultOf(conn.socket.set_auth_token({"u": 1}, expires_in=60))
        self.assertEqual(conn.socket.auth_token["exp"], int(START) + 60)

    def test_optionValues(self):
        from scserver.auth import AuthConfig
        from scserver.errors import InvalidOptionsError
        self.assertFalse(AuthConfig.from_options({"auth_key": KEY}).require_expiry)
        for value, expected in ((True, True), ("yes", True), ("false", False), (False, False)):
            config = AuthConfig.from_options({"auth_key": KEY, "auth_require_expiry": value})
            self.assertIs(config.require_expiry, expected)
        self.assertRaises(InvalidOptionsError, AuthConfig.from_options,
                          {"auth_key": KEY, "auth_require_expiry": "maybe"})
        self.assertRaises(InvalidOptionsError, AuthConfig.from_options,
                          {"auth_key": KEY, "auth_require_expiry": 2})


class ExpiryLeewayTests(AuthTestMixin, SynchronousTestCase):
    """The inbound-message expiry check allows C{auth_leeway}, as verification does."""

    def setUp(self):
        self.make(auth_leeway=30, ping_timeout_disabled=True)
        self.conn = connect(self.server)
        self.socket = self.conn.socket
        self.conn.handshake()
        self.socket.set_auth_token({"u": 1}, expires_in=10)
        self.conn.pop_sent()

    def test_withinLeeway(self):
        self.clock.advance(39)
        self.conn.emit("anything", 1)
        self.assertEqual(self.conn.sent_events(), [])
        self.assertEqual(self.socket.auth_state, self.socket.AUTHENTICATED)

    def test_pastLeeway(self):
        self.clock.advance(41)
        self.conn.emit("anything", 1)
        self.assertEqual(self.conn.sent_events(), [{"event": "#removeAuthToken", "data": None}])
        self.assertIsNone(self.socket.auth_token)
