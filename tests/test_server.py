"""
Tests for L{scserver.SCServer} over real sockets on 127.0.0.1: listening,
embedding in twisted.web, the registries, the server events and close().
"""

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

import scserver
from scserver import SCServer
from scserver.client import connect
from scserver.codec import JSONCodec, MinBinCodec
from scserver.errors import BadConnectionError, InvalidArgumentsError, InvalidOptionsError


def wait(seconds=0.01):
    return deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        yield wait()
    raise AssertionError("condition not reached in {} s".format(timeout))


class OptionsTests(SynchronousTestCase):
    def test_unknownOption(self):
        self.assertRaises(InvalidOptionsError, SCServer, reactor=reactor, pingInterval=5)

    def test_badValues(self):
        for options in ({"ping_interval": 0}, {"protocol_version": 3},
                        {"max_payload": -1}, {"auth_private_key": "x"},
                        {"codec_engine": "nope"}, {"broker": "nope://"}):
            self.assertRaises(InvalidOptionsError, SCServer, reactor=reactor, auth_key="k",
                              **options)

    def test_defaults(self):
        server = SCServer(reactor=reactor, auth_key="k")
        self.assertEqual(server.options["path"], "/socketcluster/")
        self.assertEqual(server.options["ping_interval"], 8.0)
        self.assertEqual(server.options["ping_timeout"], 20.0)
        self.assertEqual(server.options["max_payload"], 1048576)
        self.assertEqual(server.options["socket_channel_limit"], 1000)
        self.assertIsInstance(server.codec, JSONCodec)
        self.assertEqual(server.path, "/socketcluster/")

    def test_pathNormalised(self):
        self.assertEqual(SCServer(reactor=reactor, auth_key="k", path="ws").path, "/ws/")

    def test_publicSurface(self):
        for name in ("SCServer", "SCServerSocket", "SCChannel", "listen", "errors",
                     "interfaces"):
            self.assertTrue(hasattr(scserver, name), name)

    def test_badEndpoint(self):
        server = SCServer(reactor=reactor, auth_key="k")
        self.assertRaises(InvalidArgumentsError, server.listen, 3.5)

    def test_setCodecEngine(self):
        server = SCServer(reactor=reactor, auth_key="k")
        server.set_codec_engine("min-bin")
        self.assertIsInstance(server.codec, MinBinCodec)
        self.assertRaises(InvalidOptionsError, server.set_codec_engine, object())

    def test_setAuthEngine(self):
        server = SCServer(reactor=reactor, auth_key="k")
        self.assertRaises(InvalidArgumentsError, server.set_auth_engine, object())


class ServerTestMixin:
    @defer.inlineCallbacks
    def start(self, endpoint="tcp:0:interface=127.0.0.1", **options):
        options.setdefault("auth_key", "server-tests")
        self.server = SCServer(reactor=reactor, **options)
        self.events = []
        for name in ("handshake", "connection", "disconnection", "connectionAbort",
                     "closure"):
            self.server.on(name, lambda *args, name=name: self.events.append((name,) + args))
        self.port = yield self.server.listen(endpoint)
        self.addCleanup(self.server.close)
        self.url = "ws://127.0.0.1:{}/socketcluster/".format(self.port.getHost().port)
        return self.server

    def names(self):
        return [event[0] for event in self.events]


class ListenTests(ServerTestMixin, TestCase):
    @defer.inlineCallbacks
    def test_endpointObject(self):
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        yield self.start(endpoint)
        client = yield connect(self.url, reactor=reactor)
        self.assertEqual(list(self.server.clients), [client.id])
        yield client.disconnect()

    @defer.inlineCallbacks
    def test_moduleListen(self):
        server = yield scserver.listen("tcp:0:interface=127.0.0.1", reactor=reactor,
                                       auth_key="k")
        self.addCleanup(server.close)
        self.assertTrue(server.running)
        self.assertTrue(server.is_ready)

    @defer.inlineCallbacks
    def test_readyEvent(self):
        server = SCServer(reactor=reactor, auth_key="k")
        ready = []
        server.on("ready", lambda: ready.append(True))
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(server.close)
        self.assertEqual(ready, [True])
        self.assertTrue(port.getHost().port > 0)

    @defer.inlineCallbacks
    def test_wrongPath(self):
        yield self.start()
        url = self.url.replace("/socketcluster/", "/other/")
        failure = yield self.assertFailure(connect(url, reactor=reactor), BadConnectionError)
        self.assertEqual(self.server.pending_clients_count, 0)
        self.assertIsNotNone(failure)


class EmbeddingTests(TestCase):
    @defer.inlineCallbacks
    def test_resourceInASite(self):
        server = SCServer(reactor=reactor, auth_key="k")
        server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        root = Resource()
        root.putChild(b"socketcluster", server.resource)
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        server.startService()
        self.addCleanup(port.stopListening)
        self.addCleanup(server.close)
        url = "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port)
        client = yield connect(url, reactor=reactor)
        reply = yield client.invoke("echo", {"through": "twisted.web"})
        self.assertEqual(reply, {"through": "twisted.web"})
        yield client.disconnect()


class LifecycleTests(ServerTestMixin, TestCase):
    @defer.inlineCallbacks
    def test_registriesAndEvents(self):
        yield self.start()
        statuses = []
        self.server.on("connection", lambda socket, status: statuses.append(
            (socket, status, socket.state)))
        client = yield connect(self.url, reactor=reactor)
        socket, status, state = statuses[0]
        self.assertEqual(state, "open")
        self.assertEqual(status["id"], socket.id)
        self.assertEqual(len(socket.id), 20)
        self.assertEqual(self.server.clients, {socket.id: socket})
        self.assertEqual(self.server.clients_count, 1)
        self.assertEqual(self.server.pending_clients_count, 0)
        self.assertEqual(socket.request.path, "/socketcluster/")
        self.assertEqual(socket.remote_address, "127.0.0.1")
        self.assertEqual(self.names(), ["handshake", "connection"])
        yield client.disconnect(4100, "bye")
        yield wait_until(lambda: "closure" in self.names())
        self.assertEqual(self.names(), ["handshake", "connection", "disconnection", "closure"])
        self.assertEqual(self.events[2][2:], (4100, "bye"))
        self.assertEqual(self.server.clients, {})
        self.assertEqual(socket.state, "closed")
        self.assertGreater(socket.get_bytes_received(), 40)

    @defer.inlineCallbacks
    def test_connectionAbort(self):
        yield self.start(handshake_timeout=0.2)
        pending = []
        self.server.on("handshake", lambda socket: pending.append(
            (self.server.pending_clients_count, socket.id in self.server.pending_clients)))
        closes = []

        class Silent(WebSocketClientProtocol):
            """Opens the WebSocket and never sends #handshake."""

            def onClose(self, wasClean, code, reason):
                closes.append(code)

        factory = WebSocketClientFactory(self.url)
        factory.protocol = Silent
        connectWS(factory)
        yield wait_until(lambda: closes)
        self.assertEqual(closes, [4005])
        yield wait_until(lambda: "closure" in self.names())
        self.assertEqual(pending, [(1, True)])
        self.assertEqual(self.names(), ["handshake", "connectionAbort", "closure"])
        self.assertEqual(self.events[1][2], 4005)
        self.assertEqual(self.server.pending_clients_count, 0)

    @defer.inlineCallbacks
    def test_closeTerminatesEverySocket(self):
        yield self.start()
        clients = yield defer.gatherResults(
            [connect(self.url, reactor=reactor) for _ in range(5)])
        closed = []
        for client in clients:
            client.on("disconnect", lambda code, reason: closed.append(code))
        yield self.server.close()
        self.assertEqual(self.server.clients, {})
        self.assertEqual(self.names().count("disconnection"), 5)
        yield wait_until(lambda: len(closed) == 5)
        self.assertEqual(closed, [1001] * 5)
        # The port no longer listens.
        yield self.assertFailure(connect(self.url, reactor=reactor, connect_timeout=2),
                                 Exception)

    @defer.inlineCallbacks
    def test_minBinCodecEndToEnd(self):
        yield self.start(codec_engine=MinBinCodec())
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        for version in (1, 2):
            client = yield connect(self.url, reactor=reactor, codec_engine=MinBinCodec(),
                                   protocol_version=version)
            reply = yield client.invoke("echo", {"bytes": b"\x00\xff", "n": version})
            self.assertEqual(reply, {"bytes": b"\x00\xff", "n": version})
            yield client.disconnect()

    @defer.inlineCallbacks
    def test_perMessageDeflate(self):
        yield self.start(per_message_deflate=True)
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        client = yield connect(self.url, reactor=reactor, per_message_deflate=True)
        protocol = list(self.server.clients.values())[0]._output
        self.assertIsNotNone(protocol._perMessageCompress)
        reply = yield client.invoke("echo", {"text": "z" * 5000})
        self.assertEqual(reply, {"text": "z" * 5000})
        got = []
        channel = client.subscribe("squeezed")
        channel.watch(got.append)
        yield channel.when_subscribed()
        yield self.server.exchange.publish("squeezed", "y" * 3000)
        yield wait_until(lambda: got)
        self.assertEqual(got, ["y" * 3000])
        yield client.disconnect()

    @defer.inlineCallbacks
    def test_protocolVersionForced(self):
        for version in (1, 2):
            server = SCServer(reactor=reactor, auth_key="k", protocol_version=version,
                              ping_interval=0.05, ping_timeout=0.5)
            port = yield server.listen("tcp:0:interface=127.0.0.1")
            url = "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port)
            client = yield connect(url, reactor=reactor, protocol_version=version)
            yield wait(0.3)
            socket = list(server.clients.values())[0]
            self.assertEqual(socket.protocol_version, version)
            self.assertEqual(client.state, "open")
            yield client.disconnect()
            yield server.close()


class SlowConsumerTests(ServerTestMixin, TestCase):
    """
    A client that stops reading is cut off once C{max_outbound_buffer}
    bytes are queued for it, instead of growing the server's memory.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_stalledClientIsCutOff(self):
        yield self.start(max_outbound_buffer=1024 * 1024, ping_timeout_disabled=True)
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        stalled = yield connect(self.url, reactor=reactor)
        healthy = yield connect(self.url, reactor=reactor)
        closes = []
        self.server.on("disconnection", lambda socket, code, reason: closes.append(
            (socket.id, code, reason)))
        stalled._conn.transport.pauseProducing()  # stop reading from the socket
        socket = self.server.clients[stalled.id]
        blob = "x" * 65536
        sent = 0
        for _ in range(1000):  # at most 64 MiB
            if socket.state == "closed":
                break
            socket.emit("blob", blob)
            sent += len(blob)
            if sent % (1024 * 1024) == 0:
                yield wait(0)
        self.assertEqual(socket.state, "closed")
        self.assertEqual(closes[0], (stalled.id, 1008, "Outbound buffer limit exceeded"))
        self.assertLess(sent, 48 * 1024 * 1024)
        reply = yield healthy.invoke("echo", "still here")
        self.assertEqual(reply, "still here")
        yield healthy.disconnect()
        stalled._conn.transport.resumeProducing()

    @defer.inlineCallbacks
    def test_disabled(self):
        server = yield self.start(max_outbound_buffer=None)
        client = yield connect(self.url, reactor=reactor)
        protocol = server.clients[client.id]._output
        self.assertIsNone(protocol._outbound_limit)
        yield client.disconnect()
