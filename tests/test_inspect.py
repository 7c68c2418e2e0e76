"""
The live inspection page (L{scserver._inspect}): its options, its
credentials, the HTTP answers on the WebSocket port, the state it shows
(bounded, without tokens, message bodies nor error texts), the counters'
rates, the merge of several processes' snapshots through the broker, and
the internal channel clients cannot use.

The page in a real browser is in L{tests.test_inspect_browser}.
"""

import base64
import json
import os

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase

from scserver import _inspect
from scserver.brokers.memory import MemoryBroker
from scserver.errors import InvalidActionError, InvalidOptionsError
from scserver.options import OPTIONS
from scserver.testing import MemoryNetwork, connect, make_server
from tests.test_hardening_transport import RawFactory
from tests.test_observability import parse, request

TOKEN = "inspect-test-token-0123456789"


def inspect_server(clock=None, **options):
    options.setdefault("inspect_path", "/inspect")
    if "inspect_user" not in options:
        options.setdefault("inspect_token", TOKEN)
    return make_server(clock=clock, **options)


def bearer(token=TOKEN):
    return b"Authorization: Bearer " + token.encode() + b"\r\n"


def basic(user, password):
    return b"Authorization: Basic " + base64.b64encode(
        "{}:{}".format(user, password).encode()) + b"\r\n"


class OptionTests(SynchronousTestCase):
    """The C{inspect_*} options."""

    def test_offByDefault(self):
        """No page, no inspector, no path answered."""
        server = make_server()
        self.assertIsNone(server.inspector)
        self.assertIsNone(server.options["inspect_path"])
        self.assertNotIn("inspect", server.factory.http_paths.values())

    def test_paths(self):
        """The page, its files and state.json; a trailing slash is dropped."""
        server = inspect_server(inspect_path="/ops/inspect/")
        self.assertEqual(server.options["inspect_path"], "/ops/inspect")
        self.assertEqual(sorted(path for path, what in server.factory.http_paths.items()
                                if what == "inspect"),
                         [b"/ops/inspect", b"/ops/inspect/", b"/ops/inspect/app.js",
                          b"/ops/inspect/state.json", b"/ops/inspect/style.css"])

    def test_needsCredentials(self):
        """The page is never served without credentials."""
        error = self.assertRaises(InvalidOptionsError, make_server, inspect_path="/inspect")
        self.assertIn("credentials", str(error))

    def test_userAndPasswordTogether(self):
        for options in ({"inspect_user": "ops"}, {"inspect_password": "pw"}):
            self.assertRaises(InvalidOptionsError, make_server, inspect_path="/inspect",
                              **options)
        self.assertRaises(InvalidOptionsError, make_server, inspect_path="/inspect",
                          inspect_user="a:b", inspect_password="pw")

    def test_badPaths(self):
        for path in ("inspect", "/", "/socketcluster", "/metrics", "/health", "/a?b"):
            self.assertRaises(InvalidOptionsError, inspect_server, inspect_path=path)

    def test_emptySecret(self):
        self.assertRaises(InvalidOptionsError, make_server, inspect_path="/inspect",
                          inspect_token="")

    def test_tokenFromEnvironmentOrFile(self):
        """C{--inspect-token} takes C{env:NAME} and C{@path}, as C{--auth-key} does."""
        option = [o for o in OPTIONS if o.name == "inspect_token"][0]
        self.patch(os, "environ", dict(os.environ, SC_INSPECT_TEST="from-env"))
        self.assertEqual(option.parse("env:SC_INSPECT_TEST"), "from-env")
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write("from-file\n")
        self.assertEqual(option.parse("@" + path), "from-file")
        password = [o for o in OPTIONS if o.name == "inspect_password"][0]
        self.assertEqual(password.parse("env:SC_INSPECT_TEST"), "from-env")

    def test_workersGetSecretsThroughTheEnvironment(self):
        """A token given as env:/@file reaches the workers by environment, not argv."""
        from scserver import tap

        self.patch(os, "environ", dict(os.environ, SC_INSPECT_TEST="worker-secret"))
        config = tap.Options()
        config.parseOptions(["--inspect-path", "/inspect", "--inspect-token",
                             "env:SC_INSPECT_TEST"])
        arguments = tap.worker_arguments(config)
        self.assertNotIn("worker-secret", arguments)
        self.assertIn("env:SCSERVER_INSPECT_TOKEN", arguments)
        self.assertEqual(tap.worker_environment(config)["SCSERVER_INSPECT_TOKEN"],
                         "worker-secret")


class HTTPTests(SynchronousTestCase):
    """The page's HTTP answers on the WebSocket port."""

    def serve(self, **options):
        self.server = inspect_server(**options)
        self.network = MemoryNetwork(self.server)

    def get(self, path, extra=b"", method=b"GET"):
        connection = self.network.connect_protocol(RawFactory())
        connection.client_protocol.transport.write(request(path, method, extra))
        self.network.flush()
        client = connection.client_protocol
        self.assertTrue(client.lost)
        self.assertEqual(self.server.pending_clients, {})
        return parse(client.received)

    def assertRefused(self, path, extra=b""):
        status, headers, body = self.get(path, extra)
        self.assertEqual((status, body), (401, b"Unauthorized\n"))
        self.assertIn("www-authenticate", headers)
        self.assertNotIn("set-cookie", headers)
        return headers

    def test_refusedWithoutCredentials(self):
        """Every path of the page: 401 and one line, nothing else."""
        self.serve()
        for path in (b"/inspect", b"/inspect/", b"/inspect/state.json", b"/inspect/app.js",
                     b"/inspect/style.css"):
            headers = self.assertRefused(path)
            self.assertEqual(headers["www-authenticate"], 'Bearer realm="scserver inspection"')

    def test_refusedWrongToken(self):
        self.serve()
        self.assertRefused(b"/inspect/state.json", bearer("wrong"))
        self.assertRefused(b"/inspect/state.json", bearer(TOKEN + "x"))
        self.assertRefused(b"/inspect/state.json?token=" + TOKEN[:-1].encode())
        self.assertRefused(b"/inspect/state.json", b"Cookie: scserver_inspect=" +
                           TOKEN.encode() + b"\r\n")
        self.assertRefused(b"/inspect/state.json", basic("ops", TOKEN))

    def test_bearer(self):
        self.serve()
        status, headers, body = self.get(b"/inspect/state.json", bearer())
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["cache-control"], "no-store")
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        state = json.loads(body)
        self.assertEqual(state["answered_by"], self.server.inspector.process_id)
        self.assertEqual([p["id"] for p in state["processes"]],
                         [self.server.inspector.process_id])

    def test_queryTokenSetsCookie(self):
        """
        C{?token=} on the page sets a cookie holding a hash of the token
        (not the token), which authenticates the page's other requests.
        """
        self.serve()
        status, headers, body = self.get(b"/inspect/?token=" + TOKEN.encode())
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertIn(b'src="/inspect/app.js"', body)
        self.assertIn(b'href="/inspect/style.css"', body)
        cookie = headers["set-cookie"]
        self.assertNotIn(TOKEN, cookie)
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        self.assertIn("Path=/inspect;", cookie)
        value = cookie.split(";")[0]
        for path in (b"/inspect/state.json", b"/inspect/app.js"):
            self.assertEqual(
                self.get(path, b"Cookie: a=b; " + value.encode() + b"\r\n")[0], 200)
        # Bearer or Basic answers set no cookie.
        self.assertNotIn("set-cookie", self.get(b"/inspect/", bearer())[1])

    def test_basic(self):
        self.serve(inspect_user="ops", inspect_password="pass word:1")
        headers = self.assertRefused(b"/inspect/")
        self.assertTrue(headers["www-authenticate"].startswith('Basic realm="scserver'))
        self.assertRefused(b"/inspect/", basic("ops", "pass word:2"))
        self.assertRefused(b"/inspect/", basic("opz", "pass word:1"))
        self.assertRefused(b"/inspect/", b"Authorization: Basic !!!notbase64\r\n")
        status, headers, body = self.get(b"/inspect/", basic("ops", "pass word:1"))
        self.assertEqual(status, 200)
        self.assertIn(b"<title>scserver inspection</title>", body)

    def test_tokenAndBasic(self):
        """Both kinds of credentials may be configured; either opens the page."""
        self.serve(inspect_token=TOKEN, inspect_user="ops", inspect_password="pw")
        self.assertEqual(self.get(b"/inspect", bearer())[0], 200)
        self.assertEqual(self.get(b"/inspect", basic("ops", "pw"))[0], 200)

    def test_files(self):
        self.serve()
        status, headers, body = self.get(b"/inspect/app.js", bearer())
        self.assertEqual((status, headers["content-type"]),
                         (200, "text/javascript; charset=utf-8"))
        self.assertIn(b"state.json", body)
        self.assertNotIn(b"innerHTML", body)
        status, headers, body = self.get(b"/inspect/style.css", bearer())
        self.assertEqual((status, headers["content-type"]), (200, "text/css; charset=utf-8"))
        self.assertIn("default-src 'self'", headers["content-security-policy"])

    def test_head(self):
        self.serve()
        status, headers, body = self.get(b"/inspect/state.json", bearer(), method=b"HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertNotEqual(headers["content-length"], "0")

    def test_otherPathsNotServed(self):
        """Another path under the page's is not the page's: autobahn refuses it."""
        self.serve()
        status, _, body = self.get(b"/inspect/secret", bearer())
        self.assertNotEqual(status, 200)
        self.assertNotIn(b"processes", body)

    def test_pathIsEscapedInThePage(self):
        """The configured path is put in the page HTML-escaped."""
        self.serve(inspect_path="/i&<x>")
        status, _, body = self.get(b"/i&<x>/", bearer())
        self.assertEqual(status, 200)
        self.assertIn(b'data-base="/i&amp;&lt;x&gt;"', body)


class StateTests(SynchronousTestCase):
    """What the state holds, and what it never holds."""

    def setUp(self):
        self.clock = Clock()
        self.server = inspect_server(clock=self.clock)
        self.inspector = self.server.inspector

    def open(self, **kwargs):
        connection = connect(self.server, **kwargs)
        connection.handshake()
        return connection

    def test_connectionsAndChannels(self):
        self.clock.advance(100)
        first = self.open(remote_address="192.0.2.1")
        self.clock.advance(5)
        second = self.open(remote_address="192.0.2.2")
        connect(self.server)  # still in its handshake
        first.subscribe("news")
        first.subscribe("sport")
        second.subscribe("news")
        state = self.inspector.state()
        process = state["processes"][0]
        self.assertEqual(process["connections"]["open"], 2)
        self.assertEqual(process["connections"]["pending"], 1)
        shown = process["connections"]["shown"]
        # The most recent first.
        self.assertEqual([entry["address"] for entry in shown[1:]], ["192.0.2.2", "192.0.2.1"])
        self.assertEqual(shown[0]["state"], "connecting")
        entry = shown[2]
        self.assertEqual(entry, {
            "id": first.socket.id, "address": "192.0.2.1", "state": "open",
            "authenticated": False, "protocol": first.socket.protocol_version,
            "since": 100.0, "subscriptions": 2})
        self.assertEqual(state["channels"], [
            {"name": "news", "subscribers": 2, "presence": None},
            {"name": "sport", "subscribers": 1, "presence": None}])
        self.assertEqual(state["totals"]["open"], 2)
        second.disconnect()
        state = self.inspector.state()
        self.assertEqual([entry["address"] for entry in
                          state["processes"][0]["connections"]["shown"][1:]], ["192.0.2.1"])
        self.assertEqual(state["channels"][0], {"name": "news", "subscribers": 1,
                                                "presence": None})
        self.assertNotIn(second.socket.id, self.inspector._since)

    def test_noTokensNoBodies(self):
        """Auth tokens, published data and error texts never reach the state."""
        self.server.on("connection", lambda socket, status: socket.set_auth_token(
            {"user": "alice", "secret": "TOKEN-CLAIM-SECRET"}))
        connection = self.open()
        connection.subscribe("room")
        connection.publish("room", {"body": "MESSAGE-BODY-SECRET"})
        connection.unsubscribe("not-subscribed-SECRET-TEXT")
        text = json.dumps(self.inspector.state())
        self.assertTrue(connection.socket.auth_state == "authenticated")
        self.assertIn('"authenticated": true', text)
        for secret in ("TOKEN-CLAIM-SECRET", "alice", "MESSAGE-BODY-SECRET",
                       "SECRET-TEXT", connection.socket.signed_auth_token):
            self.assertNotIn(secret, text)
        errors = self.inspector.state()["processes"][0]["errors"]
        self.assertEqual([(e["name"], e["socket"]) for e in errors],
                         [("BrokerError", connection.socket.id)])

    def test_errorsAndBlocks(self):
        """
        Errors by class name (with the socket id), middleware blocks by
        type; a block's or a socket error's warning is not counted twice.
        """
        def refuse(req, next):
            next(InvalidActionError("no SECRET-REASON"))

        self.server.add_middleware(self.server.MIDDLEWARE_SUBSCRIBE, refuse)
        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_IN,
                                   lambda req, next: next(True))
        connection = self.open()
        connection.subscribe("private").addErrback(lambda f: None)
        connection.publish("anything", 1).addErrback(lambda f: None)
        self.server.emit("warning", ValueError("SECRET-WARNING"))
        self.clock.advance(3)
        process = self.inspector.state()["processes"][0]
        self.assertEqual(process["blocks"], [
            {"time": 0.0, "type": "subscribe", "name": "InvalidActionError",
             "socket": connection.socket.id},
            {"time": 0.0, "type": "publishIn", "name": "silent",
             "socket": connection.socket.id}])
        self.assertEqual([(e["name"], e["socket"]) for e in process["errors"]],
                         [("ValueError", None)])
        self.assertNotIn("SECRET", json.dumps(process))

    def test_bounded(self):
        """Connections, channels and events are capped; the rest is counted."""
        self.patch(_inspect, "MAX_CONNECTIONS", 3)
        self.patch(_inspect, "MAX_CHANNELS", 2)
        connections = [self.open() for _ in range(5)]
        for index, name in enumerate(["a", "b", "c"]):
            for connection in connections[:index + 1]:
                connection.subscribe(name)
        for _ in range(_inspect.MAX_EVENTS + 10):
            self.server.emit("warning", ValueError())
        state = self.inspector.state()
        process = state["processes"][0]
        self.assertEqual([e["id"] for e in process["connections"]["shown"]],
                         [c.socket.id for c in reversed(connections[2:])])
        self.assertEqual(process["connections"]["more"], 2)
        self.assertEqual([c["name"] for c in state["channels"]], ["c", "b"])
        self.assertEqual(state["channels_more"], 1)
        self.assertEqual(len(process["errors"]), _inspect.MAX_EVENTS)

    def test_rates(self):
        """Per-second rates from the server's counters, between two ticks."""
        self.inspector.tick()
        self.assertEqual(self.inspector.snapshot()["rates"], {})
        connection = self.open()
        connection.subscribe("room")
        for _ in range(4):
            connection.publish("room", 1)
        self.clock.advance(2)
        self.inspector.tick()
        rates = self.inspector.snapshot()["rates"]
        self.assertEqual(rates["publishes"], 2.0)
        self.assertEqual(rates["connections"], 0.5)
        self.assertEqual(rates["messages_in"], 3.0)
        state = self.inspector.state()
        self.assertEqual(state["totals"]["publishes_per_second"], 2.0)
        self.assertEqual(state["processes"][0]["totals"]["publishes"], 4)

    def test_presence(self):
        """With C{exchange.presence_stats}, the busiest channels show their counts."""
        asked = []

        def presence_stats(channel):
            asked.append(channel)
            return defer.succeed({"connections": 2, "users": 1, "bad": "text"})

        self.server.exchange.presence_stats = presence_stats
        self.open().subscribe("room")
        self.inspector.state()  # watched
        self.inspector.tick()
        self.assertEqual(asked, ["room"])
        self.assertEqual(self.inspector.state()["channels"],
                         [{"name": "room", "subscribers": 1,
                           "presence": {"connections": 2, "users": 1}}])

    def test_presenceOfTheExchange(self):
        """With the presence feature on, its counts show beside the channels it keeps."""
        if "presence_channels" not in {option.name for option in OPTIONS}:
            raise unittest.SkipTest("this scserver has no presence feature")
        server = inspect_server(clock=self.clock, presence_channels="room*")
        for channels in (["room1"], ["room1", "other"]):
            connection = connect(server)
            connection.handshake()
            for name in channels:
                connection.subscribe(name)
        server.inspector.state()
        server.inspector.tick()
        self.clock.advance(0)
        self.assertEqual(server.inspector.state()["channels"], [
            {"name": "room1", "subscribers": 2, "presence": {"connections": 2, "users": 0}},
            {"name": "other", "subscribers": 1, "presence": None}])

    def test_presenceFailure(self):
        """A failing C{presence_stats} leaves the presence out."""
        self.server.exchange.presence_stats = lambda channel: defer.fail(ValueError("x"))
        self.open().subscribe("room")
        self.inspector.state()
        self.inspector.tick()
        self.inspector.tick()
        self.assertIsNone(self.inspector.state()["channels"][0]["presence"])


class InternalChannelTests(SynchronousTestCase):
    """Clients cannot subscribe nor publish to the inspection channel."""

    def test_refused(self):
        server = inspect_server()
        connection = connect(server)
        connection.handshake()
        for action in (connection.subscribe, lambda name: connection.publish(name, {"id": "x"})):
            outcome = []
            action(_inspect.INSPECT_CHANNEL).addErrback(outcome.append)
            self.assertEqual(outcome[0].type, InvalidActionError)
            self.assertIn("reserved", outcome[0].getErrorMessage())
        self.assertEqual(connection.socket.subscriptions(), [])
        self.assertEqual(server.inspector.state()["processes"][0]["connections"]["open"], 1)


class _Hub:
    """Brokers that share their publications, as processes on one Redis do."""

    def __init__(self):
        self.brokers = []

    def broker(self):
        hub = self

        class Shared(MemoryBroker):
            def publish(self, channel, data):
                for broker in hub.brokers:
                    MemoryBroker.publish(broker, channel, json.loads(json.dumps(data)))
                return defer.succeed(None)

        broker = Shared()
        self.brokers.append(broker)
        return broker


class ProcessesTests(SynchronousTestCase):
    """Several processes: each publishes its snapshot while watched; the state merges them."""

    def setUp(self):
        self.clock = Clock()
        hub = _Hub()
        self.first = inspect_server(clock=self.clock, broker=hub.broker())
        self.second = inspect_server(clock=self.clock, broker=hub.broker())
        for server in (self.first, self.second):
            server.startService()
            self.addCleanup(server.close)
        self.assertTrue(self.first.inspector.running)

    def test_idleUntilWatched(self):
        """Nobody looks: nothing is published."""
        heard = []
        self.first.exchange.watch(_inspect.INSPECT_CHANNEL, heard.append)
        self.clock.advance(5)
        self.assertEqual(heard, [])
        self.assertEqual(len(self.first.inspector.state()["processes"]), 1)

    def test_merged(self):
        connect(self.first).handshake()
        second = connect(self.second)
        second.handshake()
        second.subscribe("room")
        connect(self.first).handshake()
        self.first.inspector.state()  # someone looks at the first
        self.clock.advance(1)  # the first publishes; the second hears, is watched
        self.clock.advance(1)  # the second publishes
        state = self.first.inspector.state()
        ids = [p["id"] for p in state["processes"]]
        self.assertEqual(ids[0], self.first.inspector.process_id)
        self.assertEqual(sorted(ids), sorted([self.first.inspector.process_id,
                                              self.second.inspector.process_id]))
        self.assertEqual(state["totals"]["open"], 3)
        self.assertEqual(state["channels"], [{"name": "room", "subscribers": 1,
                                              "presence": None}])
        # The second process is left out once it is not heard from.
        self.second.inspector.stop()
        self.clock.advance(_inspect.STALE_AFTER + 1)
        self.assertEqual(len(self.first.inspector.state()["processes"]), 1)

    def test_watchEnds(self):
        """The others stop publishing once the viewer's process stops being looked at."""
        self.first.inspector.state()
        self.clock.advance(2)
        heard = []
        self.first.exchange.watch(_inspect.INSPECT_CHANNEL, heard.append)
        self.clock.advance(_inspect.WATCH_FOR + 2)
        heard[:] = []
        self.clock.advance(3)
        self.assertEqual(heard, [])

    def test_garbageIgnored(self):
        """What is not a snapshot is ignored; the number of processes is bounded."""
        self.patch(_inspect, "MAX_PROCESSES", 2)
        inspector = self.first.inspector
        for data in (None, [1], {"id": 5}, {"no": "id"}):
            self.first.exchange.deliver(_inspect.INSPECT_CHANNEL, data)
        for number in range(4):
            self.first.exchange.deliver(_inspect.INSPECT_CHANNEL,
                                        {"id": "p{}".format(number), "time": 0})
        self.assertEqual(sorted(inspector._others), ["p0", "p1"])

    def test_stopAndRestart(self):
        """close() stops the loop and unsubscribes; starting again resumes."""
        self.first.close()
        self.assertFalse(self.first.inspector.running)
        self.assertFalse(self.first.exchange.is_subscribed(_inspect.INSPECT_CHANNEL, True))
        self.first.startService()
        self.assertTrue(self.first.inspector.running)


class MergeTests(SynchronousTestCase):
    """L{_inspect.merge}."""

    def test_sums(self):
        one = {"id": "a", "time": 10, "connections": {"open": 2, "pending": 1},
               "channels": [{"name": "x", "subscribers": 2}], "channels_more": 0,
               "rates": {"publishes": 1.5, "messages_in": 2, "messages_out": 3},
               "presence": {"x": {"connections": 1}}}
        two = {"id": "b", "time": 11, "connections": {"open": 1, "pending": 0},
               "channels": [{"name": "x", "subscribers": 1}, {"name": "y", "subscribers": 5}],
               "channels_more": 4, "rates": {}, "presence": {"x": {"connections": 3}}}
        state = _inspect.merge([one, two], 12, "a")
        self.assertEqual(state["channels"], [
            {"name": "y", "subscribers": 5, "presence": None},
            {"name": "x", "subscribers": 3, "presence": {"connections": 3}}])
        self.assertEqual(state["channels_more"], 4)
        self.assertEqual(state["totals"], {"open": 3, "pending": 1, "publishes_per_second": 1.5,
                                           "messages_in_per_second": 2.0,
                                           "messages_out_per_second": 3.0})


class MalformedTests(SynchronousTestCase):
    """What is not a snapshot of this version is left out; a failure answers 500."""

    def test_mergeSkipsMalformed(self):
        good = {"id": "a", "connections": {"open": 1, "pending": 0},
                "channels": [{"name": "x", "subscribers": 1}]}
        bad = [{"id": "b"}, {"id": "c", "connections": {"open": "many", "pending": 0},
                              "channels": []},
               {"id": "d", "connections": {"open": 1, "pending": 0},
                "channels": [{"name": 5, "subscribers": 1}]},
               {"id": "e", "connections": {"open": 1, "pending": 0}, "channels": [],
                "presence": {"x": "text"}}]
        state = _inspect.merge([good] + bad, 0, "a")
        self.assertEqual([p["id"] for p in state["processes"]], ["a"])
        self.assertEqual(state["totals"]["open"], 1)
        self.assertEqual(state["channels"], [{"name": "x", "subscribers": 1, "presence": None}])

    def test_failureAnswers500(self):
        server = inspect_server()

        def broken():
            raise RuntimeError("SECRET-DETAIL")

        self.patch(server.inspector, "state", broken)
        answer = server.inspector.answer(b"GET", b"/inspect/state.json", [bearer().strip()])
        self.assertEqual((answer.code, answer.body), (500, b"Internal Server Error\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RedisProcessesTests(unittest.TestCase):
    """Two servers on one real redis-server see each other on the page."""

    from tests._redis import skip_reason as skip
    timeout = 30

    @defer.inlineCallbacks
    def test_twoServers(self):
        from scserver import SCServer
        from scserver.brokers.redis import RedisBroker
        from tests._redis import RedisServer

        redis = RedisServer(reactor)
        self.addCleanup(redis.cleanup)
        yield redis.start()
        servers = []
        for _ in range(2):
            broker = RedisBroker.from_url(redis.url, reactor)
            server = SCServer(reactor=reactor, broker=broker, auth_key="k" * 32,
                              inspect_path="/inspect", inspect_token=TOKEN)
            ready = defer.Deferred()
            server.on("ready", lambda d=ready: d.called or d.callback(None))
            yield server.listen("tcp:0:interface=127.0.0.1")
            self.addCleanup(server.close)
            yield ready
            servers.append(server)
        first, second = servers
        wanted = sorted(server.inspector.process_id for server in servers)
        for _ in range(50):
            seen = sorted(p["id"] for p in first.inspector.state()["processes"])
            if seen == wanted:
                break
            yield _sleep(0.1)
        self.assertEqual(seen, wanted)


def _sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
