"""
Observability: the plain HTTP C{/health} and C{/metrics} endpoints on the
WebSocket port, the counters behind the Prometheus metrics, and the
structured log events of connections.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from scserver.brokers.memory import MemoryBroker
from scserver.errors import InvalidOptionsError
from scserver.testing import MemoryNetwork, make_server
from tests.test_hardening_transport import RawFactory


class PendingBroker(MemoryBroker):
    """A memory broker that is never ready."""

    def start(self, deliver):
        MemoryBroker.start(self, deliver)
        return Deferred()


def request(path, method=b"GET", extra=b""):
    return (method + b" " + path + b" HTTP/1.1\r\nHost: localhost\r\n" + extra + b"\r\n")


def parse(response):
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    return status, headers, body


def samples(body):
    """{(name, frozenset(labels.items())): value} of a Prometheus text body."""
    found = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


class HTTPEndpointTests(SynchronousTestCase):
    """
    A plain GET of the health or metrics path is answered by the transport;
    the connection is closed, no socket is made, no timer is left.
    """

    def setUp(self):
        from twisted.internet import reactor

        before = set(reactor.getDelayedCalls())
        self.addCleanup(lambda: self.assertEqual(
            [call for call in reactor.getDelayedCalls() if call not in before], []))

    def serve(self, **options):
        self.server = make_server(**options)
        self.network = MemoryNetwork(self.server)

    def get(self, data):
        connection = self.network.connect_protocol(RawFactory())
        connection.client_protocol.transport.write(data)
        self.network.flush()
        client = connection.client_protocol
        self.assertTrue(client.lost)
        self.assertEqual(self.server.pending_clients, {})
        self.assertEqual(self.network.clock.getDelayedCalls(), [])
        return parse(client.received)

    def test_healthReady(self):
        self.serve()
        status, headers, body = self.get(request(b"/health"))
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(headers["content-length"], "3")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(self.server.stats.connections, 0)

    def test_healthQueryString(self):
        self.serve()
        self.assertEqual(self.get(request(b"/health?probe=1"))[0], 200)

    def test_healthHead(self):
        self.serve()
        status, headers, body = self.get(request(b"/health", method=b"HEAD"))
        self.assertEqual((status, body, headers["content-length"]), (200, b"", "3"))

    def test_healthNotReady(self):
        """503 while the broker is not ready, and once the server is closing."""
        self.serve(broker=PendingBroker())
        self.assertFalse(self.server.is_ready)
        status, _, body = self.get(request(b"/health"))
        self.assertEqual((status, body), (503, b"not ready\n"))

    def test_healthStopped(self):
        self.serve()
        self.server.is_ready = False
        self.assertEqual(self.get(request(b"/health"))[0], 503)

    def test_metrics(self):
        self.serve()
        status, headers, body = self.get(request(b"/metrics"))
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        found = samples(body)
        self.assertEqual(found[("scserver_ready", frozenset())], 1)
        self.assertEqual(found[("scserver_connections", frozenset({("state", "open")}))], 0)

    def test_configuredPaths(self):
        self.serve(health_path="/_/alive", metrics_path="/_/prom")
        self.assertEqual(self.get(request(b"/_/alive"))[0], 200)
        self.assertEqual(self.get(request(b"/_/prom"))[0], 200)
        # The default paths are plain requests, refused by autobahn now.
        self.assertEqual(self.get(request(b"/health"))[0], 426)

    def test_disabled(self):
        for value in ("", None):
            self.serve(health_path=value, metrics_path=value)
            self.assertEqual(self.server.factory.http_paths, {})
            self.assertEqual(self.get(request(b"/health"))[0], 426)
            self.assertEqual(self.get(request(b"/metrics"))[0], 426)

    def test_badPaths(self):
        for options in ({"health_path": "health"}, {"metrics_path": "/socketcluster/"},
                        {"health_path": "/x", "metrics_path": "/x"}):
            self.assertRaises(InvalidOptionsError, make_server, **options)

    def test_otherMethods(self):
        """A POST to the metrics path is autobahn's to refuse (405)."""
        self.serve()
        self.assertEqual(self.get(request(b"/metrics", method=b"POST"))[0], 405)

    def test_upgradeOnMetricsPath(self):
        """An upgrade request for the metrics path is not answered as metrics."""
        self.serve()
        status, _, _ = self.get(request(
            b"/metrics", extra=b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"))
        self.assertEqual(status, 400)

    def test_splitHead(self):
        """A request head that arrives in pieces is answered once complete."""
        self.serve()
        connection = self.network.connect_protocol(RawFactory())
        data = request(b"/health")
        for i in range(len(data)):
            connection.client_protocol.transport.write(data[i:i + 1])
            self.network.flush()
        self.assertEqual(parse(connection.client_protocol.received)[0], 200)

    def test_twoServers(self):
        """Each server has its own registry: two in one process do not clash."""
        first, second = make_server(), make_server()
        self.assertIsNot(first.metrics_registry, second.metrics_registry)
        first.stats.handshakes = 3
        from scserver._metrics import render
        self.assertEqual(samples(render(first.metrics_registry))[
            ("scserver_handshakes_total", frozenset())], 3)
        self.assertEqual(samples(render(second.metrics_registry))[
            ("scserver_handshakes_total", frozenset())], 0)


class MetricsTests(SynchronousTestCase):
    """The counters, as a scrape reads them, after real client traffic."""

    def setUp(self):
        self.server = make_server()
        self.network = MemoryNetwork(self.server)

        def on_connection(socket, status):
            def echo(data, respond):
                self.server.reactor.advance(0.03)
                respond(None, data)

            socket.on("echo", echo)

        self.server.on("connection", on_connection)

    def scrape(self):
        from scserver._metrics import render
        return samples(render(self.server.metrics_registry))

    def client(self):
        client = self.network.client(auto_reconnect=False)
        d = client.connect()
        self.network.flush()
        self.successResultOf(d)
        return client

    def test_traffic(self):
        client = self.client()
        found = self.scrape()
        self.assertEqual(found[("scserver_connections", frozenset({("state", "open")}))], 1)
        self.assertEqual(found[("scserver_handshakes_total", frozenset())], 1)
        self.assertEqual(found[("scserver_connections_accepted_total", frozenset())], 1)
        before_in = found[("scserver_messages_total", frozenset({("direction", "in")}))]
        before_out = found[("scserver_messages_total", frozenset({("direction", "out")}))]
        bytes_in = found[("scserver_bytes_total", frozenset({("direction", "in")}))]
        self.assertEqual(before_in, 1)  # the #handshake
        self.assertEqual(bytes_in, self.server.clients[client.id].get_bytes_received())

        d = client.invoke("echo", "x" * 100)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), "x" * 100)
        channel = client.subscribe("news")
        client.subscribe("sport")
        self.network.flush()
        self.assertEqual(channel.state, "subscribed")
        d = client.invoke("#publish", {"channel": "news", "data": "hello"})
        self.network.flush()

        found = self.scrape()
        self.assertEqual(
            found[("scserver_messages_total", frozenset({("direction", "in")}))], before_in + 4)
        # the echo reply, two subscribe replies, the publish reply, the publication
        self.assertEqual(
            found[("scserver_messages_total", frozenset({("direction", "out")}))],
            before_out + 5)
        self.assertGreater(found[("scserver_bytes_total", frozenset({("direction", "out")}))],
                           100)
        self.assertEqual(found[("scserver_publishes_total", frozenset())], 1)
        self.assertEqual(found[("scserver_subscriptions", frozenset())], 2)
        self.assertEqual(found[("scserver_channels", frozenset())], 2)
        # The echo took 0.03 s on the clock.
        self.assertEqual(found[("scserver_request_duration_seconds_count", frozenset())], 1)
        self.assertAlmostEqual(found[("scserver_request_duration_seconds_sum", frozenset())],
                               0.03)
        self.assertEqual(found[("scserver_request_duration_seconds_bucket",
                                frozenset({("le", "0.025")}))], 0)
        self.assertEqual(found[("scserver_request_duration_seconds_bucket",
                                frozenset({("le", "0.05")}))], 1)

        client.disconnect(4321, "bye")
        self.network.flush()
        found = self.scrape()
        self.assertEqual(found[("scserver_connections", frozenset({("state", "open")}))], 0)
        self.assertEqual(found[("scserver_disconnects_total", frozenset({("code", "4321")}))], 1)
        self.assertEqual(found[("scserver_subscriptions", frozenset())], 0)

    def test_latencySampled(self):
        """
        Every request is counted; the first of every LATENCY_SAMPLE is timed.
        """
        from scserver._metrics import LATENCY_SAMPLE

        client = self.client()
        for _ in range(LATENCY_SAMPLE + 1):
            client.invoke("echo", 1)
            self.network.flush()
        client.emit("echo", 1)  # no reply asked: not a request
        self.network.flush()
        found = self.scrape()
        self.assertEqual(found[("scserver_requests_total", frozenset())], LATENCY_SAMPLE + 1)
        self.assertEqual(found[("scserver_request_duration_seconds_count", frozenset())], 2)
        self.assertAlmostEqual(found[("scserver_request_duration_seconds_sum", frozenset())],
                               0.06)

    def test_middlewareBlocksAndErrors(self):
        def block(req, next):
            next(Exception("no"))

        self.server.add_middleware(self.server.MIDDLEWARE_SUBSCRIBE, block)
        client = self.client()
        client.subscribe("secret")
        self.network.flush()
        d = client.invoke("#unsubscribe", "never")
        self.network.flush()
        self.failureResultOf(d)
        found = self.scrape()
        self.assertEqual(
            found[("scserver_middleware_blocks_total", frozenset({("type", "subscribe")}))], 1)
        self.assertEqual(found[("scserver_errors_total", frozenset({("name", "BrokerError")}))],
                         1)

    def test_labelValuesBounded(self):
        stats = self.server.stats
        for code in range(4000, 4200):
            stats.closed(code)
        self.assertEqual(len(stats.closes), 65)
        self.assertEqual(stats.closes["other"], 200 - 64)

    def test_slowConsumer(self):
        self.server = make_server(max_outbound_buffer=1000)
        self.network = MemoryNetwork(self.server)
        client = self.client()
        [socket] = self.server.clients.values()
        connection = self.network.connection_of(client._protocol)
        connection.client_transport.pauseProducing()
        for _ in range(200):
            socket.emit("fill", "x" * 1000)
            self.network.flush()
        found = self.scrape()
        self.assertEqual(found[("scserver_slow_consumer_disconnects_total", frozenset())], 1)
        self.assertEqual(found[("scserver_disconnects_total", frozenset({("code", "1008")}))], 1)


class LogTests(SynchronousTestCase):
    """Connections and disconnections are logged with the socket id and peer."""

    def test_connectDisconnect(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server = make_server()
        network = MemoryNetwork(server)
        client = network.client(auto_reconnect=False)
        client.connect()
        network.flush()
        [socket_id] = server.clients
        client.disconnect(4000, "secret reason")
        network.flush()
        mine = [e for e in events if e.get("id") == socket_id and "peer" in e]
        formats = [e["log_format"] for e in mine]
        self.assertEqual(formats, ["Socket {id} connected from {peer}",
                                   "Socket {id} from {peer} disconnected ({code})"])
        for event in mine:
            self.assertEqual(event["log_level"], LogLevel.debug)
            self.assertEqual(event["peer"], "127.0.0.1")
            self.assertNotIn("secret reason", repr(event))


class TwistdOptionsTests(SynchronousTestCase):
    """The paths are twistd flags; an empty value or none disables one."""

    def test_flags(self):
        from scserver.tap import Options

        config = Options()
        config.parseOptions(["--metrics-path", "none", "--health-path", "/hc"])
        self.assertEqual(config["server_options"], {"health_path": "/hc", "metrics_path": None})
        config = Options()
        config.parseOptions(["--health-path", ""])
        self.assertEqual(config["server_options"], {"health_path": None})
