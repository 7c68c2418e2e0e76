"""
Tests for the in-memory network of L{scserver.testing}: L{MemoryNetwork},
L{MemoryConnection}, L{RawServer}.

The test cases are trial's asynchronous C{TestCase}s (the tests themselves
are synchronous): trial then fails a test that leaves a call pending in the
global reactor, which is what the network must never use.
"""

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import error as ierror, protocol, ssl
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from scserver import errors
from scserver.client import SCClientSocket
from scserver.testing import MemoryConnection, MemoryNetwork, RawServer, make_server

from .test_client import self_signed


def global_delayed_calls():
    """The calls pending in the global reactor (the tests may use it; the network never does)."""
    from twisted.internet import reactor

    return reactor.getDelayedCalls()


class Recorder:
    """Records the events of an emitter: C{(name,) + args}."""

    def __init__(self, emitter, *names):
        self.events = []
        for name in names:
            emitter.on(name, lambda *args, name=name: self.events.append((name,) + args))

    def named(self, name):
        return [event[1:] for event in self.events if event[0] == name]


class PlainClientProtocol(WebSocketClientProtocol):
    """
    An autobahn client that records what it gets and never answers pings
    (nor close frames, when C{answer_close} is false).
    """

    answer_close = True

    def onOpen(self):
        self.messages = []
        self.closes = []

    def onMessage(self, payload, isBinary):
        self.messages.append(payload if isBinary else payload.decode("utf-8"))

    def onCloseFrame(self, code, reasonRaw):
        if self.answer_close:
            return WebSocketClientProtocol.onCloseFrame(self, code, reasonRaw)
        return None

    def onClose(self, wasClean, code, reason):
        if hasattr(self, "closes"):
            self.closes.append((code, reason))


def plain_client_factory(url="ws://localhost/socketcluster/"):
    factory = WebSocketClientFactory(url, reactor=Clock())
    factory.protocol = PlainClientProtocol
    return factory


class SCServerTests(unittest.TestCase):
    """Real clients and a real L{scserver.SCServer}, in memory."""

    def setUp(self):
        self.global_calls = global_delayed_calls()
        self.server = make_server()
        self.sockets = []
        self.server_events = []

        def on_connection(socket, status):
            self.sockets.append(socket)
            socket.on("echo", lambda data, respond: respond(None, data))
            socket.on("close", lambda code, reason: self.server_events.append(
                ("close", socket.id, code, reason)))

        self.server.on("connection", on_connection)
        self.network = MemoryNetwork(self.server)

    def tearDown(self):
        self.assertEqual(global_delayed_calls(), self.global_calls)

    def connected_client(self, **options):
        options.setdefault("auto_reconnect", False)
        client = self.network.client(**options)
        d = client.connect()
        self.network.flush()
        self.assertIs(self.successResultOf(d), client)
        return client

    def test_connect(self):
        """A client dials through the network's reactor and connects to the server."""
        client = self.network.client(auto_reconnect=False)
        self.assertEqual(client.url, "ws://localhost/socketcluster/")
        d = client.connect()
        self.assertNoResult(d)
        [(host, port, factory, timeout, _bind)] = self.network.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("localhost", 80, 20))
        self.network.flush()
        self.assertIs(self.successResultOf(d), client)
        self.assertEqual(client.state, "open")
        self.assertEqual(list(self.server.clients), [client.id])
        [connection] = self.network.connections
        self.assertIsInstance(connection, MemoryConnection)
        self.assertIs(connection.connector, self.network.reactor.connectors[0])
        self.assertEqual(connection.connector.state, "connected")
        self.assertFalse(connection.tls)
        [socket] = self.sockets
        self.assertEqual(socket.remote_address, "127.0.0.1")
        self.assertIs(connection.server_protocol.sc_socket, socket)
        self.assertIs(connection.client_protocol.factory, factory)

    def test_echo(self):
        client = self.connected_client()
        d = client.invoke("echo", {"hello": ["world", 1]})
        self.assertNoResult(d)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"hello": ["world", 1]})

    def test_pubsub(self):
        alice = self.connected_client()
        bob = self.connected_client()
        channel = alice.subscribe("news")
        got = []
        channel.watch(got.append)
        self.network.flush()
        self.assertEqual(channel.state, "subscribed")
        d = bob.publish("news", {"title": "hi"})
        self.network.flush()
        self.successResultOf(d)
        self.successResultOf(self.server.exchange.publish("news", "from the server"))
        self.network.flush()
        self.assertEqual(got, [{"title": "hi"}, "from the server"])

    def test_ping_pong(self):
        """
        The server pings every 8 s and closes a socket after 20 s without a
        pong; the client closes after 20 s without a ping.  advance() flushes
        between the timers, so both stay open however far it goes.
        """
        client = self.connected_client()
        [socket] = self.sockets
        self.network.advance(100)
        self.assertEqual((client.state, socket.state), ("open", "open"))
        self.assertEqual(self.network.clock.seconds(), 100)

    def test_ping_timeout(self):
        """A client that never answers pings is closed with 4001 after ping_timeout."""
        connection = self.network.connect_protocol(plain_client_factory())
        client = connection.client_protocol
        client.sendMessage(b'{"event":"#handshake","data":{},"cid":1}')
        self.network.flush()
        [socket] = self.sockets
        self.network.advance(19)
        self.assertEqual(socket.state, "open")
        self.assertEqual(client.messages.count(""), 2)
        self.network.advance(1)
        self.assertEqual(socket.state, "closed")
        self.assertEqual([event[:3] for event in self.server_events], [("close", socket.id, 4001)])
        self.assertEqual([code for code, _reason in client.closes], [4001])
        self.assertTrue(connection.closed)

    def test_client_closes(self):
        """The client's close code and reason reach the server; nothing stays pending."""
        client = self.connected_client()
        [socket] = self.sockets
        closed = client.disconnect(4100, "client bye")
        self.network.flush()
        self.successResultOf(closed)
        self.assertEqual(self.server_events, [("close", socket.id, 4100, "client bye")])
        self.assertTrue(self.network.connections[0].closed)
        self.assertEqual(self.network.connections[0].connector.state, "disconnected")
        self.assertEqual(self.server.clients, {})
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_server_closes(self):
        client = self.connected_client()
        events = Recorder(client, "disconnect", "close")
        [socket] = self.sockets
        socket.disconnect(4321, "custom reason")
        self.network.flush()
        self.assertEqual(events.events, [("disconnect", 4321, "custom reason"),
                                         ("close", 4321, "custom reason")])
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_drop(self):
        """The network fails: 1006 on both sides."""
        client = self.connected_client()
        events = Recorder(client, "close")
        [socket] = self.sockets
        self.network.connections[0].drop()
        self.assertEqual(events.named("close")[0][0], 1006)
        self.assertEqual([event[:3] for event in self.server_events], [("close", socket.id, 1006)])
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_open_handshake_timeout_on_the_clock(self):
        """
        autobahn's own timers (here the opening handshake timeout: 10 s, the
        server's handshake_timeout) run on the network's clock.
        """
        factory = protocol.ClientFactory.forProtocol(protocol.Protocol)
        connection = self.network.connect_protocol(factory)
        self.assertEqual(len(self.network.clock.getDelayedCalls()), 1)
        self.network.advance(9)
        self.assertFalse(connection.closed)
        self.network.advance(1)
        self.assertTrue(connection.closed)
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_close_handshake_timeout_on_the_clock(self):
        """
        The server drops a client that does not answer its close frame after
        autobahn's closing handshake timeout (4-5 s), on the clock.
        """
        connection = self.network.connect_protocol(plain_client_factory())
        client = connection.client_protocol
        client.answer_close = False
        client.sendMessage(b'{"event":"#handshake","data":{},"cid":1}')
        self.network.flush()
        [socket] = self.sockets
        socket.disconnect(4100)
        self.network.flush()
        self.assertEqual(socket.state, "closed")
        self.assertFalse(connection.closed)
        self.network.advance(4)
        self.assertFalse(connection.closed)
        self.network.advance(1)
        self.assertTrue(connection.closed)
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_server_close(self):
        """SCServer.close() closes the sockets (1001) and stops listening."""
        client = self.connected_client()
        events = Recorder(client, "close")
        d = self.server.close()
        self.network.flush()
        self.successResultOf(d)
        self.assertEqual(events.named("close"), [(1001, "Server is shutting down")])
        late = self.network.client(auto_reconnect=False)
        d = late.connect()
        self.network.flush()
        self.assertEqual(self.failureResultOf(d, errors.BadConnectionError).value.code, 1006)

    def test_tls(self):
        key_pem, cert_pem = self_signed()
        network = MemoryNetwork(self.server, tls=ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options())
        client = network.client(auto_reconnect=False, ssl_context_factory=ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem)))
        self.assertEqual(client.url, "wss://localhost/socketcluster/")
        d = client.connect()
        network.flush()
        self.successResultOf(d)
        [connection] = network.connections
        self.assertTrue(connection.tls)
        self.assertEqual(len(network.reactor.sslClients), 1)
        reply = client.invoke("echo", "secret")
        network.flush()
        self.assertEqual(self.successResultOf(reply), "secret")
        self.successResultOf(self._disconnect(network, client))

    def _disconnect(self, network, client):
        d = client.disconnect()
        network.flush()
        return d

    def test_tls_refused_without_server_tls(self):
        client = self.network.client("wss://localhost/socketcluster/", auto_reconnect=False)
        d = client.connect()
        self.network.flush()
        self.assertEqual(self.failureResultOf(d, errors.BadConnectionError).value.code, 1006)

    def test_memory_reactor_clock(self):
        """The server's reactor may be a MemoryReactorClock rather than a Clock."""
        server = make_server(MemoryReactorClock())
        network = MemoryNetwork(server)
        client = network.client(auto_reconnect=False)
        d = client.connect()
        network.flush()
        self.successResultOf(d)
        self.assertIs(network.clock, server.reactor)
        self.successResultOf(self._disconnect(network, client))

    def test_reactor_needs_a_clock(self):
        class NoClock:
            reactor = object()

        self.assertRaises(TypeError, MemoryNetwork, NoClock())

    def test_reconnect_on_the_clock(self):
        """A client's automatic reconnection runs on the clock, and advance() serves it."""
        client = self.connected_client(auto_reconnect=True, reconnect_options={
            "initial_delay": 1, "randomness": 0})
        connects = Recorder(client, "connect")
        self.network.connections[0].drop()
        self.assertEqual(client.state, "closed")
        self.network.advance(1)
        self.assertEqual(client.state, "open")
        self.assertEqual(len(connects.named("connect")), 1)
        self.assertEqual(len(self.network.connections), 2)
        self.assertEqual(len(self.server.clients), 1)
        self.successResultOf(self._disconnect(self.network, client))

    def test_txaio_loop_restored(self):
        import txaio

        before = txaio.config.loop
        self.connected_client().disconnect()
        self.network.flush()
        self.assertIs(txaio.config.loop, before)


class DialTests(unittest.TestCase):
    """Dials: accepting, accept(), refuse(), the connector, its timeout."""

    def setUp(self):
        self.server = RawServer(Clock())
        self.network = MemoryNetwork(self.server)
        self.network.accepting = False

    def test_waiting_dial(self):
        client = self.network.client(auto_reconnect=False, connect_timeout=5)
        d = client.connect()
        self.network.advance(4)
        self.assertEqual(self.network.connections, [])
        [connection] = self.network.accept()
        self.assertEqual(self.network.connections, [connection])
        self.assertTrue(connection.server_protocol.is_websocket_open)
        self.assertNoResult(d)

    def test_refuse(self):
        client = self.network.client(auto_reconnect=False)
        d = client.connect()
        self.network.refuse()
        failure = self.failureResultOf(d, errors.BadConnectionError)
        self.assertEqual(failure.value.code, 1006)
        self.assertEqual(self.network.reactor.connectors[0].state, "disconnected")
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_connect_timeout(self):
        """A dial no one answers fails after its timeout, like a real connector."""
        failures = []

        class Factory(protocol.ClientFactory):
            protocol = protocol.Protocol

            def clientConnectionFailed(self, connector, reason):
                failures.append(reason)

        self.network.reactor.connectTCP("localhost", 80, Factory(), timeout=3)
        self.network.advance(2.5)
        self.assertEqual(failures, [])
        self.network.advance(0.5)
        [failure] = failures
        failure.trap(ierror.TimeoutError)
        self.assertEqual(self.network.accept(), [])

    def test_connector_disconnect(self):
        """connector.disconnect() stops a dial, then closes a connection."""
        factory = plain_client_factory()
        connector = self.network.reactor.connectTCP("localhost", 80, factory)
        connector.disconnect()
        self.assertEqual(connector.state, "disconnected")
        self.assertEqual(self.network.accept(), [])
        connector.connect()
        [connection] = self.network.accept()
        self.assertEqual(connector.state, "connected")
        connector.disconnect()
        self.network.flush()
        self.assertTrue(connection.closed)
        self.assertEqual(connector.state, "disconnected")
        self.assertEqual(connection.server_protocol.close_frame, None)
        self.assertIsNotNone(connection.server_protocol.lost)

    def test_connect_protocol(self):
        connection = self.network.connect_protocol(plain_client_factory("ws://example.com:9000/x?a=b"))
        [(host, port, _factory, _timeout, _bind)] = self.network.reactor.tcpClients
        self.assertEqual((host, port), ("example.com", 9000))
        peer = connection.server_protocol
        self.assertEqual(self.server.protocols, [peer])
        self.assertEqual(peer.request.path, "/x")
        self.assertEqual(peer.request.params, {"a": ["b"]})
        connection.client_protocol.sendMessage(b"hello")
        connection.flush()
        self.assertEqual(peer.messages, ["hello"])

    def test_connect_protocol_refused(self):
        server = make_server()
        network = MemoryNetwork(server)
        self.successResultOf(server.close())
        self.assertRaises(ierror.ConnectError, network.connect_protocol, plain_client_factory())


class RawServerTests(unittest.TestCase):
    """A L{RawServer} plays the server for a real client."""

    def setUp(self):
        self.server = RawServer(Clock())
        self.network = MemoryNetwork(self.server)
        self.client = self.network.client(auto_reconnect=False)
        self.events = Recorder(self.client, "connect", "disconnect", "close", "raw")
        self.connected = self.client.connect()
        self.network.flush()
        [self.peer] = self.server.protocols

    def handshake(self):
        self.peer.send(json.dumps({"rid": 1, "data": {
            "id": "raw-id", "pingTimeout": 20000, "isAuthenticated": False}}))
        self.network.flush()
        self.successResultOf(self.connected)

    def test_records(self):
        self.assertEqual(self.peer.request.path, "/socketcluster/")
        self.assertTrue(self.peer.is_websocket_open)
        self.assertEqual(self.peer.messages,
                         ['{"event":"#handshake","data":{"authToken":null},"cid":1}'])
        self.handshake()
        self.assertEqual(self.client.id, "raw-id")
        self.client.send(b"\x00\x01")
        self.client.send("text")
        self.peer.send("")
        self.network.flush()
        self.assertEqual(self.peer.messages[1:], [b"\x00\x01", "text", ""])
        self.peer.clear()
        self.assertEqual(self.peer.messages, [])

    def test_client_close_frame(self):
        """The raw server records the close frame and does not answer it."""
        self.handshake()
        closed = self.client.disconnect(4100, "bye")
        self.network.flush()
        self.assertEqual(self.peer.close_frame, (4100, "bye"))
        self.assertNoResult(closed)
        self.assertIsNone(self.peer.lost)
        self.peer.close(4100, "bye")
        self.network.flush()
        self.peer.drop()
        self.network.flush()
        self.successResultOf(closed)
        self.assertIsNotNone(self.peer.lost)
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_server_close_frame(self):
        """Any code can be sent; the client echoes it."""
        self.handshake()
        self.peer.close(4321, "custom reason")
        self.network.flush()
        self.assertEqual(self.peer.close_frame, (4321, "custom reason"))
        self.peer.drop()
        self.network.flush()
        self.assertEqual(self.events.named("close"), [(4321, "custom reason")])

    def test_drop(self):
        self.handshake()
        self.peer.drop()
        self.network.flush()
        self.assertEqual(self.events.named("close")[0][0], 1006)

    def test_deny(self):
        self.server.deny = (403, "Forbidden")
        client = self.network.client(auto_reconnect=False)
        d = client.connect()
        self.network.flush()
        self.assertEqual(self.failureResultOf(d, errors.BadConnectionError).value.code, 1006)
        self.assertFalse(self.server.protocols[-1].is_websocket_open)

    def test_client_is_scclientsocket(self):
        self.assertIsInstance(self.client, SCClientSocket)
        self.assertEqual(self.network.default_url, "ws://localhost/socketcluster/")


def chat_setup(server):
    """The application of the example in docs/testing.rst."""

    def on_connection(socket, status):
        def say(text, respond):
            server.exchange.publish("room", {"from": socket.id, "text": text})
            respond(None, "ok")

        socket.on("say", say)

    server.on("connection", on_connection)


class DocExampleTests(unittest.TestCase):
    """The example of docs/testing.rst, as it is written there."""

    def setUp(self):
        self.server = make_server()
        chat_setup(self.server)
        self.network = MemoryNetwork(self.server)

    def connected_client(self):
        client = self.network.client(auto_reconnect=False)
        d = client.connect()
        self.network.flush()
        self.assertIs(self.successResultOf(d), client)
        return client

    def test_say(self):
        alice = self.connected_client()
        bob = self.connected_client()
        heard = []
        bob.subscribe("room").watch(heard.append)
        self.network.flush()  # bob is subscribed before alice speaks
        d = alice.invoke("say", "hello")
        self.network.flush()
        self.assertEqual(self.successResultOf(d), "ok")
        self.assertEqual(heard, [{"from": alice.id, "text": "hello"}])

    def test_idle_clients_stay_connected(self):
        client = self.connected_client()
        self.network.advance(60)  # pings every 8 s, answered
        self.assertEqual(client.state, "open")

    def test_kicked(self):
        client = self.connected_client()
        closes = []
        client.on("close", lambda code, reason: closes.append((code, reason)))
        [socket] = self.server.clients.values()
        socket.disconnect(4321, "bye")
        self.network.flush()
        self.assertEqual(closes, [(4321, "bye")])

    def test_raw_server(self):
        server = RawServer(Clock())
        network = MemoryNetwork(server)
        client = network.client(auto_reconnect=False)
        client.connect()
        network.flush()
        [peer] = server.protocols
        self.assertEqual(peer.messages, ['{"event":"#handshake","data":{"authToken":null},"cid":1}'])
        peer.send('{"rid":1,"data":{"id":"abc","pingTimeout":20000,"isAuthenticated":false}}')
        network.flush()
        self.assertEqual(client.state, "open")
        client.disconnect(4100, "bye")
        network.flush()
        self.assertEqual(peer.close_frame, (4100, "bye"))
        peer.close(4100, "bye")
        network.flush()
        peer.drop()
        network.flush()
        self.assertTrue(network.connections[0].closed)
