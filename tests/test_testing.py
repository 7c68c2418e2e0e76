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
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface import implementer

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


class Echo(protocol.Protocol):
    """Writes back what it receives."""

    def dataReceived(self, data):
        self.transport.write(data)


class Received(protocol.Protocol):
    """Records what it receives (C{self.factory.received})."""

    def dataReceived(self, data):
        self.factory.received.append(data)


def received_factory():
    factory = protocol.ClientFactory.forProtocol(Received)
    factory.received = []
    return factory


class ListeningTests(unittest.TestCase):
    """Servers listening through a L{MemoryNetwork}'s reactor, on ports."""

    def setUp(self):
        self.global_calls = global_delayed_calls()
        self.network = MemoryNetwork(clock=Clock())
        self.reactor = self.network.reactor

    def tearDown(self):
        self.assertEqual(global_delayed_calls(), self.global_calls)

    def dial(self, port, factory=None, host="127.0.0.1"):
        """Dial C{port} with C{factory} (a L{received_factory} by default) and flush."""
        factory = factory or received_factory()
        connector = self.reactor.connectTCP(host, port, factory)
        self.network.flush()
        return connector

    def test_listen_tcp(self):
        """listenTCP takes any factory; port 0 gets a number; dials reach it by port."""
        port = self.reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
        address = port.getHost()
        self.assertEqual((address.type, address.host, address.port), ("TCP", "127.0.0.1", 40001))
        self.assertEqual(len(self.reactor.tcpServers), 1)
        connector = self.dial(40001, host="example.com")
        self.assertEqual(connector.state, "connected")
        connector.connection.client_protocol.transport.write(b"ping")
        self.network.flush()
        self.assertEqual(connector.factory.received, [b"ping"])
        self.assertIsInstance(connector.connection.server_protocol, Echo)

    def test_port_numbers(self):
        """Ports 0 get free numbers; a port in use cannot be listened on again."""
        first = self.reactor.listenTCP(0, protocol.Factory.forProtocol(Echo))
        self.reactor.listenTCP(40002, protocol.Factory.forProtocol(Echo))
        third = self.reactor.listenTCP(0, protocol.Factory.forProtocol(Echo))
        self.assertEqual((first.getHost().port, third.getHost().port), (40001, 40003))
        self.assertEqual(first.getHost().host, "0.0.0.0")
        self.assertRaises(ierror.CannotListenError, self.reactor.listenTCP, 40001,
                          protocol.Factory.forProtocol(Echo))

    def test_stop_listening(self):
        """A port that stopped listening refuses dials (the open connections stay)."""
        factory = protocol.Factory.forProtocol(Echo)
        port = self.reactor.listenTCP(0, factory)
        connection = self.dial(40001).connection
        self.assertEqual(factory.numPorts, 1)
        port.stopListening()
        self.assertEqual(factory.numPorts, 0)
        self.assertFalse(connection.closed)
        failures = []
        refused = received_factory()
        refused.clientConnectionFailed = lambda connector, reason: failures.append(reason)
        self.dial(40001, refused)
        [failure] = failures
        failure.trap(ierror.ConnectionRefusedError)

    def test_server_listens_on_endpoints(self):
        """
        An L{scserver.SCServer} on the network's reactor listens on endpoint
        strings and endpoint objects; clients dial the port they got.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint

        server = make_server(self.reactor)
        server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: respond(None, data)))
        ports = [self.successResultOf(server.listen("tcp:0:interface=127.0.0.1")),
                 self.successResultOf(server.listen(TCP4ServerEndpoint(self.reactor, 0)))]
        self.assertEqual([port.getHost().port for port in ports], [40001, 40002])
        for port in ports:
            client = self.network.client(
                "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port),
                auto_reconnect=False)
            d = client.connect()
            self.network.flush()
            self.successResultOf(d)
            reply = client.invoke("echo", port.getHost().port)
            self.network.flush()
            self.assertEqual(self.successResultOf(reply), port.getHost().port)
        d = server.close()
        self.network.flush()
        self.successResultOf(d)
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_site_timers_on_the_clock(self):
        """
        The autobahn factory of a resource in a twisted.web site, which takes
        the connection over, gets its timers on the clock: here the server's
        closing handshake timeout, for a client that does not answer.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        server = make_server(self.reactor)
        sockets = []
        server.on("connection", lambda socket, status: sockets.append(socket))
        root = Resource()
        root.putChild(b"socketcluster", server.resource)
        port = self.reactor.listenTCP(0, Site(root, reactor=self.reactor))
        server.startService()
        factory = plain_client_factory(
            "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port))
        connector = self.dial(port.getHost().port, factory)
        connection = connector.connection
        self.assertIs(self.network.connection_of(connection.server_protocol), connection)
        connection.client_protocol.answer_close = False
        connection.client_protocol.sendMessage(b'{"event":"#handshake","data":{},"cid":1}')
        self.network.flush()
        [socket] = sockets
        socket.disconnect(4100)
        self.assertFalse(connection.closed)
        self.network.advance(5)
        self.assertTrue(connection.closed)
        port.stopListening()
        self.successResultOf(server.close())
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_back_pressure(self):
        """
        A client that stops reading (its transport paused) gets nothing; the
        server's streaming producer is paused once more than 64 KiB wait,
        and resumed when the client reads them.
        """
        states = []

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self):
                states.append("paused")

            def resumeProducing(self):
                states.append("resumed")

            def stopProducing(self):
                states.append("stopped")

        class Streaming(protocol.Protocol):
            def connectionMade(self):
                self.transport.registerProducer(Producer(), True)

        self.reactor.listenTCP(0, protocol.Factory.forProtocol(Streaming))
        factory = received_factory()
        connection = self.dial(40001, factory).connection
        connection.client_transport.pauseProducing()
        server_end = connection.server_protocol.transport
        self.assertIs(server_end, connection.server_transport)
        server_end.write(b"x" * 65536)
        self.network.flush()
        self.assertEqual((states, factory.received), ([], []))
        server_end.write(b"y")
        self.assertEqual(states, ["paused"])
        self.network.flush()
        self.assertEqual((states, factory.received), (["paused"], []))
        connection.client_transport.resumeProducing()
        self.network.flush()
        self.assertEqual(states, ["paused", "resumed"])
        self.assertEqual(b"".join(factory.received), b"x" * 65536 + b"y")

    def test_listen_ssl(self):
        """listenSSL ports take TLS dials only; listenTCP ports plain dials only."""
        key_pem, cert_pem = self_signed()
        server = make_server(self.reactor)
        self.reactor.listenSSL(0, server.factory,
                               ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options())
        self.reactor.listenTCP(0, protocol.Factory.forProtocol(Echo))
        self.assertEqual(len(self.reactor.sslServers), 1)
        client = self.network.client(
            "wss://localhost:40001/socketcluster/", auto_reconnect=False,
            ssl_context_factory=ssl.optionsForClientTLS(
                "localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem)))
        d = client.connect()
        self.network.flush()
        self.successResultOf(d)
        self.assertTrue(self.network.connections[0].tls)
        d = client.disconnect()
        self.network.flush()
        self.successResultOf(d)
        for url in ("ws://localhost:40001/socketcluster/", "wss://localhost:40002/socketcluster/"):
            d = self.network.client(url, auto_reconnect=False).connect()
            self.network.flush()
            self.assertEqual(self.failureResultOf(d, errors.BadConnectionError).value.code, 1006)
        self.assertEqual(len(self.network.connections), 1)

    def test_dials_by_port_then_own_server(self):
        """
        A network with a server of its own gives it the dials to the ports
        nobody listens on.
        """
        own, other = RawServer(Clock()), RawServer(Clock())
        network = MemoryNetwork(own)
        network.reactor.listenTCP(9000, other)
        network.connect_protocol(plain_client_factory("ws://localhost:9000/"))
        network.connect_protocol(plain_client_factory("ws://localhost:9001/"))
        self.assertEqual((len(own.protocols), len(other.protocols)), (1, 1))

    def test_connection_of(self):
        self.reactor.listenTCP(0, protocol.Factory.forProtocol(Echo))
        connection = self.dial(40001).connection
        self.assertIs(self.network.connection_of(connection.client_protocol), connection)
        self.assertIs(self.network.connection_of(connection.server_protocol), connection)
        self.assertRaises(KeyError, self.network.connection_of, Echo())

    def test_no_server(self):
        """Without a server a client needs its URL; with one, the clock is the server's."""
        self.assertIsNone(self.network.default_url)
        self.assertRaises(ValueError, self.network.client)
        self.assertIsInstance(MemoryNetwork().clock, Clock)
        self.assertRaises(TypeError, MemoryNetwork, make_server(), clock=Clock())
        self.assertRaises(TypeError, MemoryNetwork, clock=object())


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

    def test_listening(self):
        network = MemoryNetwork(clock=Clock())
        server = make_server(network.reactor)
        port = self.successResultOf(server.listen("tcp:0:interface=127.0.0.1"))
        client = network.client(
            "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port),
            auto_reconnect=False)
        d = client.connect()
        network.flush()
        self.assertIs(self.successResultOf(d), client)
        d = server.close()
        network.flush()
        self.successResultOf(d)

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
