"""
Tests for L{scserver.SCServer} with real clients and its real WebSocket
transport, connected in memory (L{scserver.testing.MemoryNetwork}, whose
reactor the servers listen through): listening, embedding in twisted.web,
the registries, the server events and close().
"""

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

import scserver
from scserver import SCServer
from scserver.client import connect
from scserver.codec import JSONCodec, MinBinCodec
from scserver.errors import (
    BadConnectionError,
    InvalidActionError,
    InvalidArgumentsError,
    InvalidOptionsError,
)
from scserver.testing import MemoryNetwork
from tests._helpers import MemoryCase


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
    """
    Servers that listen through the reactor of a
    L{scserver.testing.MemoryNetwork} (C{self.reactor}, on C{self.clock}):
    these tests are about listening (endpoints, ports, a twisted.web site)
    and the transport (back-pressure).
    """

    def setUp(self):
        MemoryCase.setUp(self)
        self.net = MemoryNetwork(clock=self.clock)
        self.reactor = self.net.reactor

    def start(self, endpoint="tcp:0:interface=127.0.0.1", **options):
        options.setdefault("auth_key", "server-tests")
        self.server = SCServer(reactor=self.reactor, **options)
        self.events = []
        for name in ("handshake", "connection", "disconnection", "connectionAbort",
                     "closure"):
            self.server.on(name, lambda *args, name=name: self.events.append((name,) + args))
        self.port = self.wait(self.server.listen(endpoint))
        self.addCleanup(lambda: self.wait(self.server.close()))
        self.url = "ws://127.0.0.1:{}/socketcluster/".format(self.port.getHost().port)
        return self.server

    def connect(self, url=None, **options):
        """Connect a client (no automatic reconnection) and wait for the handshake."""
        return self.wait(self.dial(url, **options))

    def dial(self, url=None, **options):
        """Start connecting a client; return the Deferred of L{scserver.client.connect}."""
        options.setdefault("auto_reconnect", False)
        return connect(url or self.url, reactor=self.reactor, **options)

    def names(self):
        return [event[0] for event in self.events]


class ListenTests(ServerTestMixin, MemoryCase):
    def test_endpointObject(self):
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")
        self.start(endpoint)
        client = self.connect()
        self.assertEqual(list(self.server.clients), [client.id])
        self.wait(client.disconnect())

    def test_moduleListen(self):
        server = self.wait(scserver.listen("tcp:0:interface=127.0.0.1", reactor=self.reactor,
                                           auth_key="k"))
        self.addCleanup(lambda: self.wait(server.close()))
        self.assertTrue(server.running)
        self.assertTrue(server.is_ready)

    def test_readyEvent(self):
        server = SCServer(reactor=self.reactor, auth_key="k")
        ready = []
        server.on("ready", lambda: ready.append(True))
        port = self.wait(server.listen("tcp:0:interface=127.0.0.1"))
        self.addCleanup(lambda: self.wait(server.close()))
        self.assertEqual(ready, [True])
        self.assertTrue(port.getHost().port > 0)

    def test_wrongPath(self):
        self.start()
        url = self.url.replace("/socketcluster/", "/other/")
        failure = self.wait_failure(self.dial(url), BadConnectionError)
        self.assertEqual(self.server.pending_clients_count, 0)
        self.assertIsNotNone(failure)


class EmbeddingTests(ServerTestMixin, MemoryCase):
    def test_resourceInASite(self):
        server = SCServer(reactor=self.reactor, auth_key="k")
        server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        root = Resource()
        root.putChild(b"socketcluster", server.resource)
        port = self.reactor.listenTCP(0, Site(root, reactor=self.reactor), interface="127.0.0.1")
        server.startService()
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: self.wait(server.close()))
        url = "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port)
        client = self.connect(url)
        reply = self.wait(client.invoke("echo", {"through": "twisted.web"}))
        self.assertEqual(reply, {"through": "twisted.web"})
        self.wait(client.disconnect())


class LifecycleTests(ServerTestMixin, MemoryCase):
    def test_registriesAndEvents(self):
        self.start()
        statuses = []
        self.server.on("connection", lambda socket, status: statuses.append(
            (socket, status, socket.state)))
        client = self.connect()
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
        self.wait(client.disconnect(4100, "bye"))
        self.run_until(lambda: "closure" in self.names())
        self.assertEqual(self.names(), ["handshake", "connection", "disconnection", "closure"])
        self.assertEqual(self.events[2][2:], (4100, "bye"))
        self.assertEqual(self.server.clients, {})
        self.assertEqual(socket.state, "closed")
        self.assertGreater(socket.get_bytes_received(), 40)

    def test_connectionAbort(self):
        self.start(handshake_timeout=0.2)
        pending = []
        self.server.on("handshake", lambda socket: pending.append(
            (self.server.pending_clients_count, socket.id in self.server.pending_clients)))
        closes = []

        class Silent(WebSocketClientProtocol):
            """Opens the WebSocket and never sends #handshake."""

            def onClose(self, wasClean, code, reason):
                closes.append(code)

        factory = WebSocketClientFactory(self.url, reactor=self.reactor)
        factory.protocol = Silent
        connectWS(factory)
        self.run_until(lambda: closes)
        self.assertEqual(closes, [4005])
        self.run_until(lambda: "closure" in self.names())
        self.assertEqual(pending, [(1, True)])
        self.assertEqual(self.names(), ["handshake", "connectionAbort", "closure"])
        self.assertEqual(self.events[1][2], 4005)
        self.assertEqual(self.server.pending_clients_count, 0)

    def test_closeTerminatesEverySocket(self):
        self.start()
        clients = self.wait(defer.gatherResults([self.dial() for _ in range(5)]))
        closed = []
        for client in clients:
            client.on("disconnect", lambda code, reason: closed.append(code))
        self.wait(self.server.close())
        self.assertEqual(self.server.clients, {})
        self.assertEqual(self.names().count("disconnection"), 5)
        self.run_until(lambda: len(closed) == 5)
        self.assertEqual(closed, [1001] * 5)
        # The port no longer listens.
        self.wait_failure(self.dial(connect_timeout=2), Exception)

    def test_listenAgainAfterClose(self):
        """
        C{close()} stops the service; once it has fired, C{listen()} starts
        it again: the broker is ready and publications flow.  (The service
        used to stay "running" but never ready, and publish failed with
        "broker is not started".)
        """
        self.start()
        self.wait(self.server.close())
        self.assertFalse(self.server.running)
        self.assertFalse(self.server.is_ready)
        ready = []
        self.server.on("ready", lambda: ready.append(True))
        port = self.wait(self.server.listen("tcp:0:interface=127.0.0.1"))
        self.assertTrue(self.server.running)
        self.assertEqual(ready, [True])
        client = self.connect("ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port))
        got = []
        channel = client.subscribe("again")
        channel.watch(got.append)
        self.wait(channel.when_subscribed())
        self.wait(self.server.exchange.publish("again", 1))
        self.run_until(lambda: got)
        self.assertEqual(got, [1])
        self.wait(client.disconnect())

    def test_listenWhileClosing(self):
        """C{listen()} before C{close()} has fired is a clear error; a second close waits too."""
        self.start()
        client = self.connect()
        closing = self.server.close()
        self.assertNoResult(closing)
        self.assertRaises(InvalidActionError, self.server.listen, "tcp:0:interface=127.0.0.1")
        again = self.server.close()
        self.wait(closing)
        self.wait(again)
        self.assertEqual(client.state, "closed")

    def test_stopServiceIsClose(self):
        """C{stopService()} (twistd's shutdown) closes like C{close()}."""
        self.start()
        client = self.connect()
        self.wait(self.server.stopService())
        self.assertFalse(self.server.running)
        self.assertEqual(self.server.clients, {})
        self.run_until(lambda: client.state == "closed")

    def test_minBinCodecEndToEnd(self):
        self.start(codec_engine=MinBinCodec())
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        for version in (1, 2):
            client = self.connect(codec_engine=MinBinCodec(), protocol_version=version)
            reply = self.wait(client.invoke("echo", {"bytes": b"\x00\xff", "n": version}))
            self.assertEqual(reply, {"bytes": b"\x00\xff", "n": version})
            self.wait(client.disconnect())

    def test_perMessageDeflate(self):
        self.start(per_message_deflate=True)
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        client = self.connect(per_message_deflate=True)
        protocol = list(self.server.clients.values())[0]._output
        self.assertIsNotNone(protocol._perMessageCompress)
        reply = self.wait(client.invoke("echo", {"text": "z" * 5000}))
        self.assertEqual(reply, {"text": "z" * 5000})
        got = []
        channel = client.subscribe("squeezed")
        channel.watch(got.append)
        self.wait(channel.when_subscribed())
        self.wait(self.server.exchange.publish("squeezed", "y" * 3000))
        self.run_until(lambda: got)
        self.assertEqual(got, ["y" * 3000])
        self.wait(client.disconnect())

    def test_protocolVersionForced(self):
        """
        With the protocol version forced, a client of that version stays
        connected through 0.3 s of clock time of pings every 0.05 s.
        """
        for version in (1, 2):
            server = SCServer(reactor=self.reactor, auth_key="k", protocol_version=version,
                              ping_interval=0.05, ping_timeout=0.5)
            port = self.wait(server.listen("tcp:0:interface=127.0.0.1"))
            url = "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port)
            client = self.connect(url, protocol_version=version)
            self.net.advance(0.3)
            socket = list(server.clients.values())[0]
            self.assertEqual(socket.protocol_version, version)
            self.assertEqual(client.state, "open")
            self.wait(client.disconnect())
            self.wait(server.close())


class SlowConsumerTests(ServerTestMixin, MemoryCase):
    """
    A client that stops reading is cut off once C{max_outbound_buffer}
    bytes are queued for it, instead of growing the server's memory.  (On
    the memory network a transport holds 64 KiB before it pauses its
    producer, as Twisted's TCP transport does; there is no kernel buffer.)
    """

    def test_stalledClientIsCutOff(self):
        self.start(max_outbound_buffer=1024 * 1024, ping_timeout_disabled=True)
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        stalled = self.connect()
        healthy = self.connect()
        closes = []
        self.server.on("disconnection", lambda socket, code, reason: closes.append(
            (socket.id, code, reason)))
        socket = self.server.clients[stalled.id]
        # The client's end of the connection stops reading from the socket.
        stalled_end = self.net.connection_of(socket._output).client_transport
        stalled_end.pauseProducing()
        blob = "x" * 65536
        sent = 0
        for _ in range(1000):  # at most 64 MiB
            if socket.state == "closed":
                break
            socket.emit("blob", blob)
            sent += len(blob)
            if sent % (1024 * 1024) == 0:
                self.net.flush()
        self.assertEqual(socket.state, "closed")
        self.assertEqual(closes[0], (stalled.id, 1008, "Outbound buffer limit exceeded"))
        self.assertLess(sent, 48 * 1024 * 1024)
        reply = self.wait(healthy.invoke("echo", "still here"))
        self.assertEqual(reply, "still here")
        self.wait(healthy.disconnect())
        stalled_end.resumeProducing()

    def test_closeCodeEachSideSees(self):
        """
        The cut-off aborts the TCP connection: the server's socket closes
        with 1008, but no close frame can reach a client that does not
        read (it would queue behind what is already unread, and the abort
        discards it), so the client sees the connection reset: 1006.
        """
        self.start(max_outbound_buffer=256 * 1024, ping_timeout_disabled=True)
        stalled = self.connect()
        client_closes = []
        stalled.on("close", lambda code, reason: client_closes.append(code))
        server_closes = []
        socket = self.server.clients[stalled.id]
        socket.on("close", lambda code, reason: server_closes.append((code, reason)))
        stalled_end = self.net.connection_of(socket._output).client_transport
        stalled_end.pauseProducing()
        for _ in range(64):
            if socket.state == "closed":
                break
            socket.emit("blob", "x" * 65536)
            self.net.flush()
        self.assertEqual(server_closes, [(1008, "Outbound buffer limit exceeded")])
        stalled_end.resumeProducing()
        self.net.flush()
        self.assertEqual(client_closes, [1006])
        self.assertEqual(stalled.state, "closed")

    def test_disabled(self):
        server = self.start(max_outbound_buffer=None)
        client = self.connect()
        protocol = server.clients[client.id]._output
        self.assertIsNone(protocol._outbound_limit)
        self.wait(client.disconnect())
