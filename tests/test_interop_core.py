"""
Interop tests of the core protocol with the official SocketCluster clients:
socketcluster-client 14.3.2 (protocol v1) and 20.0.2 (protocol v2, default
options), each driven by C{tests/interop/run.js} in a Node process, against a
real L{scserver.SCServer} on 127.0.0.1 running L{tests.interop_app}.

Needs Node.js and C{npm ci --prefix tests/interop}; without them these tests
fail with a message saying so.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests._node import InteropMixin


class _CoreTests(InteropMixin):
    @defer.inlineCallbacks
    def test_handshake(self):
        """
        The handshake reply the client receives has a 20-character id, the
        server's ping_timeout in milliseconds and isAuthenticated false.
        """
        yield self.start_server(ping_timeout=12.5)
        r = yield self.scenario("handshake")
        status = r["status"]
        self.assertEqual(len(status["id"]), 20)
        self.assertEqual(status["id"], r["id"])
        self.assertEqual(status["pingTimeout"], 12500)
        self.assertIs(status["isAuthenticated"], False)
        self.assertEqual(r["state"], "open")
        self.assertEqual([s.id for s in self.server.interop_sockets], [r["id"]])

    @defer.inlineCallbacks
    def test_emit_with_ack(self):
        """
        An emit with an acknowledgement gets the handler's data back, an
        application error arrives with its name and extra fields, a string
        error as a string, and an event without a handler never gets a reply
        (the client's own TimeoutError after its ackTimeout).
        """
        yield self.start_server()
        r = yield self.scenario("emitAck", {"ackTimeout": 800})
        self.assertEqual(r["echo"], {"data": {"msg": "hi", "n": 1}})
        self.assertNotIn("error", r["echoNoData"])
        self.assertEqual(
            r["fail"]["error"],
            {
                "name": "CustomError",
                "message": "Something bad happened",
                "code": 4242,
                "details": {"field": "amount", "reason": "negative"},
            },
        )
        self.assertEqual(r["failString"]["error"], "plain string error")
        self.assertEqual(r["unhandled"]["error"]["name"], "TimeoutError")
        self.assertGreaterEqual(r["unhandledMs"], 700)
        self.assertEqual(r["events"], ["connect"])

    @defer.inlineCallbacks
    def test_emit_without_ack(self):
        """
        An emit without acknowledgement reaches the server handler.
        """
        yield self.start_server()
        r = yield self.scenario("emitAck", {"ackTimeout": 500})
        expected = [{"fire": "and forget", "n": 1}]
        self.assertEqual(r["noackReceived"], {"data": expected})
        self.assertEqual(self.server.interop_noack, expected)

    @defer.inlineCallbacks
    def test_server_invoke_and_emit(self):
        """
        The server's C{socket.invoke} and C{socket.emit} with a callback get
        the client's answer or the client's error (name and extra fields);
        C{socket.emit} without a callback reaches the client.
        """
        yield self.start_server()
        r = yield self.scenario("serverCall")
        refusal = {"name": "ClientRefusalError", "message": "client refuses", "extra": 42}
        self.assertEqual(r["invoke"], {"data": {"got": {"b": 2}}})
        self.assertEqual(r["invokeError"]["error"], refusal)
        self.assertEqual(r["emitCallback"], {"data": {"got": {"d": 4}}})
        self.assertEqual(r["emitCallbackError"]["error"], refusal)
        self.assertEqual(r["emitNoAck"], {"data": "sent"})
        received = [(x["event"], x["data"]) for x in r["received"]]
        self.assertEqual(
            received,
            [
                ("clientProc", {"b": 2}),
                ("clientProcErr", {"c": 3}),
                ("clientProc", {"d": 4}),
                ("clientProcErr", {"e": 5}),
                ("srvNoAck", {"a": 1}),
            ],
        )
        if self.version == 20:
            # The v20 client tells invokes (cid) from transmits (no cid).
            self.assertEqual(
                [x["kind"] for x in r["received"]],
                ["invoke", "invoke", "invoke", "invoke", "transmit"],
            )
        self.assertEqual(r["events"], ["connect"])

    @defer.inlineCallbacks
    def test_server_disconnect(self):
        """
        C{socket.disconnect(4321, 'custom reason')} reaches both clients with
        that code and that reason: v14 reads them from the C{#disconnect}
        event, v20 from the close frame.
        """
        yield self.start_server()
        r = yield self.scenario("serverDisconnect")
        self.assertEqual(r["disconnect"], {"code": 4321, "reason": "custom reason"})
        self.assertEqual(r["state"], "closed")
        names = [e["event"] for e in r["events"]]
        self.assertEqual(names.count("disconnect"), 1)

    @defer.inlineCallbacks
    def test_handshake_timeout(self):
        """
        A WebSocket client that never sends #handshake is closed with 4005
        after handshake_timeout.
        """
        yield self.start_server(handshake_timeout=0.5)
        r = yield self.scenario("handshakeTimeout", {"wait": 5000})
        self.assertTrue(r["opened"], r)
        self.assertIsNotNone(r["closed"], r)
        self.assertEqual(r["closed"]["code"], 4005)
        self.assertGreaterEqual(r["closedAfterMs"], 350)
        self.assertLess(r["closedAfterMs"], 4000)

    @defer.inlineCallbacks
    def test_heartbeat_auto(self):
        """
        With protocol_version='auto' both clients, with default options, stay
        connected through at least five ping cycles, and the server socket
        settles on the client's protocol version (1 for v14, 2 for v20).
        """
        yield self.start_server(protocol_version="auto", ping_interval=0.2, ping_timeout=1)
        r = yield self.scenario("staysConnected", {"duration": 1600})
        self.assertEqual(r["status"]["pingTimeout"], 1000)
        self.assertEqual(r["badEvents"], [])
        self.assertEqual(r["state"], "open")
        expected = 1 if self.version == 14 else 2
        pings = r["pings"]["v1"] if expected == 1 else r["pings"]["v2"]
        self.assertGreaterEqual(pings, 5, r["pings"])
        self.assertEqual(r["socketInfo"]["data"]["protocolVersion"], expected)
        self.assertEqual(len(self.server.interop_sockets), 1)
        self.assertEqual(self.server.interop_sockets[0].protocol_version, expected)


class CoreV14Tests(_CoreTests, unittest.TestCase):
    """
    socketcluster-client 14.3.2.
    """

    version = 14


class CoreV20Tests(_CoreTests, unittest.TestCase):
    """
    socketcluster-client 20.0.2 with default options (protocolVersion 2).
    """

    version = 20
