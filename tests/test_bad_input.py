"""
Bad input: whatever a client sends, no traceback escapes, the client gets
an error reply or the documented close code, and the other sockets keep
working.

Every case runs through L{scserver.testing} (in memory, on a Clock), and the
transport-level cases (invalid UTF-8, C{max_payload}) and a selection of the
others also run through real WebSocket connections: raw autobahn clients
against the server's WebSocket transport, connected in memory
(L{scserver.testing.MemoryNetwork}) and driven by its clock.
"""

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scserver import SCServer, SCServerSocket, errors
from scserver.testing import MemoryNetwork, connect, make_server
from tests._helpers import MemoryCase

KEY = "bad-input-test-secret"

HANDSHAKE = {"event": "#handshake", "data": {"authToken": None}, "cid": 1}

LONG_NAME = "c" * 100000

BAD_CHANNEL_DATA = [
    None, 0, 1, 1.5, True, False, [], [None], ["news"], {}, {"channel": {"name": "news"}},
    {"channel": None}, {"channel": 5}, {"channel": 1.5}, {"channel": True},
    {"channel": ["news"]}, {"channel": LONG_NAME}, LONG_NAME, {"data": "no channel"},
]
"""C{data} of C{#subscribe}/C{#publish}/C{#unsubscribe} that names no usable channel."""

BAD_TOKENS = [None, 0, 1, True, [], {}, ["x"], {"token": "x"}, "", "garbage", "a.b.c",
              "eyJhbGciOiJub25lIn0.eyJ1c2VybmFtZSI6ImFsaWNlIn0.", "x" * 100000]
"""C{data} of C{#authenticate} that is no valid signed token."""

BAD_HANDSHAKE_DATA = [None, 0, "x", [], [None], True, {}, {"authToken": 5}, {"authToken": {}},
                      {"authToken": []}, {"authToken": True}, {"authToken": "garbage"},
                      {"authToken": "x" * 100000}]
"""C{data} of C{#handshake} that holds no valid token."""

NON_JSON = [
    "hello", "{", "[", '{"event":', '[{"event":"echo"', "{'event': 'echo'}", "null", "true",
    "1e999", "NaN", '{"event":"echo","data":NaN,"cid":2}',
    '{"event":"echo","data":Infinity,"cid":2}', "\x00", " ", "\n", "#3", "##1", "#2#2",
    '{"event":"echo","cid":2}garbage', "[]", "{}", "[[]]", '{"":1}', "[null,1,\"x\"]",
    "\ufeff{\"event\":\"echo\",\"cid\":2}", '"#2"', '"#1"',
]
"""Text messages that are not SocketCluster packets."""

BAD_EVENT_NAMES = [1, 0, 1.5, None, True, False, [], ["echo"], {}, {"event": "echo"}]

CIDS = [0, -1, 1.5, -2.5, True, False, None, "", "x" * 129, [], [1], {}, {"a": 1}, -0.0]
"""cids that are never answered."""

GOOD_CIDS = [1, 2 ** 53 - 1, 2 ** 53, 2 ** 64, 10 ** 30, 1e300, "abc", "x" * 128, 7.0]
"""cids that are answered: any positive integer (integral floats too), short strings."""


def channel_error(reply):
    """The error of a reply, checked to be an InvalidActionError."""
    return reply["error"]["name"]


class FakeBadInputTests(SynchronousTestCase):
    """Bad input through L{scserver.testing}."""

    def setUp(self):
        self.clock = Clock()
        self.server = make_server(self.clock, auth_key=KEY)
        self.server.on("connection", self.setup_socket)
        self.warnings = []
        self.server.on("warning", self.warnings.append)
        self.victim = connect(self.server)
        self.victim.handshake()
        self.bystander = connect(self.server)
        self.bystander.handshake()
        self.bystander.subscribe("news")
        self.victim.pop_sent()
        self.bystander.pop_sent()
        self.socket_errors = []
        self.victim.socket.on("error", self.socket_errors.append)

    def setup_socket(self, socket, status):
        socket.on("echo", lambda data, respond: data)

    def tearDown(self):
        self.assertEqual(self.flushLoggedErrors(), [])

    def assertStillWorking(self, conn=None):
        """C{conn} (the victim by default) and the bystander still echo and get publications."""
        for c in ([conn] if conn is not None else [self.victim]) + [self.bystander]:
            if c.state == SCServerSocket.CLOSED:
                continue
            c.pop_sent()
            self.assertEqual(self.successResultOf(c.invoke("echo", {"still": "ok"})),
                             {"still": "ok"})
        self.bystander.pop_sent()
        self.server.exchange.publish("news", "fresh")
        self.assertEqual(self.bystander.pop_sent(), [
            {"event": "#publish", "data": {"channel": "news", "data": "fresh"}}])
        self.assertEqual(self.bystander.state, SCServerSocket.OPEN)

    def request(self, event, data):
        """Send C{event} with a new cid; return the reply (asserting there is one)."""
        cid = self.victim.emit(event, data, cid=True)
        reply = self.victim.reply_to(cid)
        self.assertIsNotNone(reply, "no reply to {} {!r}".format(event, data)[:200])
        return reply

    def test_non_json_text(self):
        """Text that is not a packet is a raw message: no reply, no close."""
        raw = []
        self.victim.socket.on("raw", raw.append)
        for payload in NON_JSON:
            self.victim.send_raw(payload)
        self.assertEqual([p for p in self.victim.pop_sent() if p != ""], [])
        self.assertEqual(self.victim.state, SCServerSocket.OPEN)
        self.assertTrue(raw)
        self.assertStillWorking()

    def test_non_json_before_handshake(self):
        """Any of those as the first message closes with 4009."""
        for payload in NON_JSON:
            conn = connect(self.server)
            conn.send_raw(payload)
            self.assertEqual(conn.closed, (4009, ""), payload)
            self.assertEqual(conn.payloads, [], payload)
        self.assertEqual(self.server.pending_clients_count, 0)
        self.assertStillWorking()

    def test_event_name_not_string(self):
        """An event name that is not a string gets an C{InvalidMessageError} reply."""
        for name in BAD_EVENT_NAMES:
            reply = self.request(name, {"x": 1})
            self.assertEqual(reply["error"]["name"], "InvalidMessageError", repr(name))
            self.victim.send({"event": name, "data": 1})
        self.assertEqual(len(self.socket_errors), 2 * len(BAD_EVENT_NAMES))
        self.assertStillWorking()

    def test_subscribe_bad_data(self):
        """Every malformed C{#subscribe} gets an error reply and subscribes nothing."""
        for data in BAD_CHANNEL_DATA:
            reply = self.request("#subscribe", data)
            self.assertEqual(channel_error(reply), "InvalidActionError", repr(data)[:100])
            self.victim.emit("#subscribe", data)
        self.assertEqual(self.victim.socket.subscriptions(), [])
        self.assertEqual(list(self.server.exchange._sockets), ["news"])
        self.assertStillWorking()

    def test_subscribe_bad_options(self):
        """Odd option values next to a good channel name do no harm."""
        for options in ({"waitForAuth": "yes"}, {"waitForAuth": [1]}, {"batch": "x"},
                        {"batch": 1}, {"data": {"deep": [[[]]]}}, {"priority": {}}):
            data = dict(options, channel="odd")
            reply = self.victim.reply_to(self.victim.emit("#subscribe", data, cid=True))
            self.clock.advance(0)
            self.victim.pop_sent()
            self.assertTrue(reply is None or "error" in reply or reply == {"rid": reply["rid"]})
        self.assertStillWorking()

    def test_publish_bad_data(self):
        """Every malformed C{#publish} gets an error reply and publishes nothing."""
        for data in BAD_CHANNEL_DATA:
            reply = self.request("#publish", data)
            self.assertEqual(channel_error(reply), "InvalidActionError", repr(data)[:100])
            self.victim.emit("#publish", data)
        self.assertEqual([p for p in self.bystander.pop_sent() if p != ""], [])
        self.assertStillWorking()

    def test_unsubscribe_bad_data(self):
        """Every malformed C{#unsubscribe} gets an error reply."""
        self.victim.subscribe("news")
        for data in BAD_CHANNEL_DATA:
            reply = self.request("#unsubscribe", data)
            self.assertIn(reply["error"]["name"], ("InvalidActionError", "BrokerError"),
                          repr(data)[:100])
            self.victim.emit("#unsubscribe", data)
        self.assertEqual(self.victim.socket.subscriptions(), ["news"])
        self.assertStillWorking()

    def test_authenticate_bad_data(self):
        """Every bad C{#authenticate} gets an error reply; the socket stays unauthenticated."""
        for data in BAD_TOKENS:
            reply = self.request("#authenticate", data)
            self.assertIn("error", reply, repr(data)[:100])
            self.assertIs(reply["data"]["isAuthenticated"], False)
            self.victim.emit("#authenticate", data)
        self.assertEqual(self.victim.socket.auth_state, SCServerSocket.UNAUTHENTICATED)
        self.assertStillWorking()

    def test_handshake_bad_data(self):
        """Every malformed C{#handshake} still opens the socket, unauthenticated."""
        for data in BAD_HANDSHAKE_DATA:
            conn = connect(self.server)
            conn.send({"event": "#handshake", "data": data, "cid": 1})
            reply = conn.reply_to(1)
            self.assertIsNotNone(reply, repr(data)[:100])
            self.assertNotIn("error", reply)
            self.assertIs(reply["data"]["isAuthenticated"], False)
            self.assertEqual(conn.state, SCServerSocket.OPEN)
            self.assertStillWorking(conn)
        conn = connect(self.server)
        conn.send({"event": "#handshake", "cid": 1})
        self.assertEqual(conn.state, SCServerSocket.OPEN)

    def test_handshake_bad_cids(self):
        """A handshake whose cid cannot be answered opens the socket silently."""
        for cid in CIDS:
            conn = connect(self.server)
            conn.send({"event": "#handshake", "data": {"authToken": None}, "cid": cid})
            self.assertEqual(conn.state, SCServerSocket.OPEN, repr(cid))
            self.assertEqual(conn.payloads, [], repr(cid))
            self.assertStillWorking(conn)

    def test_disconnect_bad_data(self):
        """A malformed C{#disconnect} closes with 1000, cleanly."""
        for data in (None, 1, "x", [], {}, {"code": "x"}, {"code": 10 ** 30}, {"code": -1},
                     {"code": 1.5}, {"code": 1000, "data": {"deep": [1]}}):
            conn = connect(self.server)
            conn.handshake()
            conn.emit("#disconnect", data)
            self.assertEqual(conn.state, SCServerSocket.CLOSED, repr(data))
            self.assertEqual(conn.closed[0], 1000)
        self.assertStillWorking()

    def test_other_protocol_events_bad_data(self):
        """C{#removeAuthToken} and unknown C{#} events with any data do no harm."""
        for data in (None, 1, "x", [], {}, {"token": 5}):
            self.victim.emit("#removeAuthToken", data, cid=True)
            self.victim.emit("#setAuthToken", data, cid=True)
            self.victim.emit("#kickOut", data, cid=True)
            self.victim.emit("#publish ", data, cid=True)
        self.assertEqual([p for p in self.victim.pop_sent() if p != ""], [])
        self.assertStillWorking()

    def test_cids(self):
        """cids of every type: only the valid ones are answered."""
        for cid in CIDS:
            self.victim.send({"event": "echo", "data": 1, "cid": cid})
        self.assertEqual(self.victim.pop_sent(), [])
        for cid in GOOD_CIDS:
            self.victim.send({"event": "echo", "data": 1, "cid": cid})
        self.assertEqual([p["rid"] for p in self.victim.pop_sent()],
                         [1, 2 ** 53 - 1, 2 ** 53, 2 ** 64, 10 ** 30, int(1e300), "abc",
                          "x" * 128, 7])
        self.assertStillWorking()

    def test_huge_cids(self):
        """
        Integer cids are answered however large (as Node answers every
        truthy cid); past Python's limit on integer digits the message
        cannot be decoded and gets no answer.  Nothing crashes.
        """
        for digits in (20, 400):
            self.victim.send_raw('{"event":"echo","data":1,"cid":1%s}' % ("0" * digits,))
            self.assertEqual(self.victim.pop_sent(), [{"rid": 10 ** digits, "data": 1}])
        self.victim.send_raw('{"event":"echo","data":1,"cid":1%s.5e-3}' % ("0" * 20,))
        self.assertEqual(self.victim.pop_sent(), [{"rid": int(1e17), "data": 1}])
        for digits in (400, 4300, 5000, 100000):
            if digits >= 128:
                # Strings of up to 128 characters are valid cids.
                self.victim.send_raw('{"event":"echo","data":1,"cid":"1%s"}' % ("0" * digits,))
            self.victim.send_raw('{"event":"echo","data":1,"cid":1%s.5e-3}' % ("0" * digits,))
        for digits in (4300, 5000, 100000):
            self.victim.send_raw('{"event":"echo","data":1,"cid":1%s}' % ("0" * digits,))
        self.assertEqual(self.victim.pop_sent(), [])
        self.assertStillWorking()

    def test_deep_nesting(self):
        """
        Deeply nested JSON is raw (when it cannot be parsed) or handled;
        nothing escapes, the socket stays open.
        """
        for depth in (100, 900, 990, 1000, 5000, 100000):
            self.victim.send_raw("[" * depth + "]" * depth)
            self.victim.send_raw("{\"a\":" * depth + "1" + "}" * depth)
            self.victim.send_raw('{"event":"echo","data":%s1%s,"cid":5}' % (
                "[" * depth, "]" * depth))
            self.victim.send_raw('{"event":"#subscribe","data":{"channel":"n","data":%s},'
                                 '"cid":6}' % ("[" * depth + "]" * depth,))
            self.victim.send_raw('{"event":"#publish","data":{"channel":"n","data":%s},'
                                 '"cid":7}' % ("[" * depth + "]" * depth,))
            self.clock.advance(0)
            self.victim.pop_sent()
            self.assertEqual(self.victim.state, SCServerSocket.OPEN, depth)
        self.assertStillWorking()

    def test_binary_garbage(self):
        """Binary frames that are not packets are raw; a binary JSON packet is handled."""
        raw = []
        self.victim.socket.on("raw", raw.append)
        for payload in (b"\x00", b"\xff\xfe\xfd", bytes(range(256)), b"\xc1" * 1000,
                        b"\x80\x81{", "[\udcff]".encode("utf-8", "surrogatepass")):
            self.victim.send_raw(payload)
        self.assertEqual(len(raw), 6)
        self.victim.send_raw(b'{"event":"echo","data":"bin","cid":9}')
        self.assertEqual(self.victim.pop_sent(), [{"rid": 9, "data": "bin"}])
        self.assertStillWorking()

    def test_binary_garbage_before_handshake(self):
        """Binary garbage as the first message closes with 4009."""
        conn = connect(self.server)
        conn.send_raw(b"\xff\x00garbage")
        self.assertEqual(conn.closed, (4009, ""))
        self.assertStillWorking()

    def test_odd_strings(self):
        """Escaped lone surrogates and control characters in names and data are handled."""
        self.victim.send_raw('{"event":"echo","data":"\\ud800\\u0000","cid":2}')
        self.assertEqual(self.victim.pop_sent(raw=True), ['{"rid":2,"data":"\\ud800\\u0000"}'])
        self.victim.send_raw('{"event":"#subscribe","data":"\\udfff","cid":3}')
        self.victim.send_raw('{"event":"#publish","data":{"channel":"\\udfff","data":1},'
                             '"cid":4}')
        self.assertEqual(self.victim.pop_sent(raw=True), [
            '{"rid":3}', '{"event":"#publish","data":{"channel":"\\udfff","data":1}}',
            '{"rid":4}'])
        self.victim.send_raw('{"event":"\\ud800","cid":5}')
        self.assertStillWorking()

    def test_bad_responses(self):
        """Responses of every shape, expected or not, do no harm."""
        results = []
        d = self.victim.socket.invoke("ask")
        d.addBoth(results.append)
        for rid in (None, True, False, 0, -1, 1.5, "1", [1], {"a": 1}, 10 ** 30, 2 ** 64):
            self.victim.send({"rid": rid, "data": "bogus"})
        self.assertEqual(results, [])
        self.victim.send({"rid": 1, "error": {"name": 5, "message": {"a": 1}, "x-y": 1}})
        self.assertIsInstance(results[0].value, errors.RemoteError)
        self.assertStillWorking()

    def test_error_reply_with_reserved_attribute_names(self):
        """
        An error reply whose fields are named as Python internals
        (C{args}, C{__class__}, C{__dict__}) is hydrated without raising.
        """
        for fields in ({"args": 5}, {"__class__": 5}, {"__dict__": 5},
                       {"name": "TimeoutError", "args": 5}, {"with_traceback": 1}):
            results = []
            self.victim.socket.invoke("ask").addBoth(results.append)
            cid = self.victim.sent_events("ask")[-1]["cid"]
            self.victim.send({"rid": cid, "error": dict(fields, message="m")})
            self.assertEqual(len(results), 1, fields)
            self.assertIsInstance(results[0].value, Exception, fields)
        self.assertStillWorking()

    def test_many_packets_in_a_batch(self):
        """
        A large batch mixing good and bad packets (2000 of them, the
        C{max_batch_size} default) is handled element by element.
        """
        batch = []
        for i in range(500):
            batch.append({"event": "echo", "data": i, "cid": i + 1})
            batch.append(None)
            batch.append({"event": 5, "cid": "bad%d" % i})
            batch.append({"rid": i})
        self.victim.send(batch)
        replies = [p for p in self.victim.pop_sent() if "data" in p]
        self.assertEqual([p["data"] for p in replies], list(range(500)))
        self.assertStillWorking()

    def test_disconnect_inside_batch(self):
        """Packets after a C{#disconnect} in the same batch are ignored."""
        self.victim.send([{"event": "#disconnect", "data": {"code": 4100}},
                          {"event": "echo", "data": 1, "cid": 2}])
        self.assertEqual(self.victim.closed, (4100, ""))
        self.assertIsNone(self.victim.reply_to(2))
        self.assertStillWorking()

    def test_bad_input_in_handlers_reply(self):
        """
        A reply the codec cannot encode is reported, not raised; the client
        gets an error reply.
        """
        self.victim.socket.on("unencodable", lambda data, respond: {"x": object()})
        cid = self.victim.emit("unencodable", None, cid=True)
        self.assertEqual(self.victim.pop_sent(), [{"rid": cid, "error": {
            "message": "The response could not be encoded", "name": "InvalidMessageError"}}])
        self.assertEqual(len(self.socket_errors), 1)
        self.assertStillWorking()


class RawClient(WebSocketClientProtocol):
    """
    A WebSocket client that sends whatever the test says and records what
    the server sends.
    """

    def __init__(self):
        WebSocketClientProtocol.__init__(self)
        self.messages = []
        self.close_info = None
        self.closed = defer.Deferred()
        self._waiters = []
        self._cid = 1

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.messages.append(payload if isBinary else payload.decode("utf-8"))
        for waiter in list(self._waiters):
            predicate, d = waiter
            for message in self.messages:
                if predicate(message):
                    self._waiters.remove(waiter)
                    d.callback(message)
                    break

    def onClose(self, wasClean, code, reason):
        self.close_info = (code, reason)
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError("closed before open: {}".format(code)))
        self.closed.callback(self.close_info)

    def send_json(self, packet):
        self.sendMessage(json.dumps(packet).encode("utf-8"), False)

    def send_text(self, text):
        self.sendMessage(text.encode("utf-8"), False)

    def wait_for(self, predicate):
        """A Deferred firing with the first message (seen or to come) matching C{predicate}."""
        for message in self.messages:
            if predicate(message):
                return defer.succeed(message)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return d

    def reply(self, rid):
        """A Deferred firing with the decoded reply C{rid}."""
        def matches(message):
            try:
                packet = json.loads(message)
            except (TypeError, ValueError):
                return False
            return type(packet) is dict and packet.get("rid") == rid and "event" not in packet

        return self.wait_for(matches).addCallback(json.loads)

    def request(self, event, data=None):
        """Send C{event} with the next cid; a Deferred firing with the reply."""
        self._cid += 1
        cid = self._cid
        self.send_json({"event": event, "data": data, "cid": cid})
        return self.reply(cid)


class RealSocketBadInputTests(MemoryCase):
    """Bad input over real WebSocket connections (on a L{MemoryNetwork})."""

    def setUp(self):
        MemoryCase.setUp(self)
        self.server = SCServer(reactor=self.clock, auth_key=KEY)
        self.server.on("connection", lambda socket, status: socket.on(
            "echo", lambda data, respond: data))
        self.closes = {}
        self.server.on("closure", lambda socket, code, reason: self.closes.__setitem__(
            socket.id, code))
        self.net = MemoryNetwork(self.server)
        self.addCleanup(lambda: self.wait(self.server.close()))
        self.bystander = self.client()
        self.handshake(self.bystander)

    def tearDown(self):
        self.assertEqual(self.flushLoggedErrors(), [])

    def client(self):
        factory = WebSocketClientFactory(self.net.default_url, reactor=self.net.reactor)
        factory.protocol = RawClient
        factory.opened = defer.Deferred()
        self.net.reactor.connectTCP(factory.host, factory.port, factory)
        client = self.wait(factory.opened)
        self.addCleanup(self.drop, client)
        return client

    def drop(self, client):
        if client.close_info is None:
            client.transport.loseConnection()
        self.wait(client.closed)

    def handshake(self, client):
        client.send_json(HANDSHAKE)
        reply = self.wait(client.reply(1))
        return reply["data"]

    def assertStillWorking(self, *clients):
        """Each client and the bystander still get an echo back."""
        for client in clients + (self.bystander,):
            reply = self.wait(client.request("echo", {"still": "ok"}))
            self.assertEqual(reply["data"], {"still": "ok"})
        self.assertEqual(self.server.clients_count, len(clients) + 1)

    def victim(self):
        client = self.client()
        status = self.handshake(client)
        return client, self.server.clients[status["id"]]

    def test_non_json_and_garbage(self):
        """Non-JSON text and binary garbage are raw messages; no reply, no close."""
        client, socket = self.victim()
        raw = []
        socket.on("raw", raw.append)
        for payload in NON_JSON:
            if payload:
                client.send_text(payload)
        client.sendMessage(bytes(range(256)), True)
        client.sendMessage(b"\xc1" * 1000, True)
        self.assertStillWorking(client)
        # The handshake reply and the echo reply, nothing else.
        self.assertEqual(len(client.messages), 2)
        self.assertTrue(raw)

    def test_wrong_types(self):
        """
        Every wrongly typed event name or C{data} of C{#subscribe},
        C{#publish}, C{#unsubscribe}, C{#authenticate} gets an error reply.
        """
        client, socket = self.victim()
        for name in BAD_EVENT_NAMES:
            reply = self.wait(client.request(name, 1))
            self.assertEqual(reply["error"]["name"], "InvalidMessageError")
        for event in ("#subscribe", "#publish", "#unsubscribe"):
            for data in BAD_CHANNEL_DATA:
                reply = self.wait(client.request(event, data))
                self.assertIn(reply["error"]["name"], ("InvalidActionError", "BrokerError"))
        for data in BAD_TOKENS:
            reply = self.wait(client.request("#authenticate", data))
            self.assertIn("error", reply)
        self.assertEqual(socket.subscriptions(), [])
        self.assertStillWorking(client)

    def test_bad_handshakes(self):
        """Malformed handshakes open the socket unauthenticated."""
        clients = []
        for data in BAD_HANDSHAKE_DATA:
            client = self.client()
            client.send_json({"event": "#handshake", "data": data, "cid": 1})
            reply = self.wait(client.reply(1))
            self.assertIs(reply["data"]["isAuthenticated"], False)
            clients.append(client)
        self.assertStillWorking(*clients)

    def test_cids(self):
        """Only valid cids are answered, over the wire too."""
        client, socket = self.victim()
        for cid in CIDS:
            client.send_json({"event": "echo", "data": "bad", "cid": cid})
        client.send_text('{"event":"echo","data":"bad","cid":1%s}' % ("0" * 5000,))
        reply = self.wait(client.request("echo", "good"))
        self.assertEqual(reply["data"], "good")
        self.assertEqual(len(client.messages), 2)
        self.assertStillWorking(client)

    def test_deep_nesting(self):
        """Deeply nested JSON within max_payload does no harm."""
        client, socket = self.victim()
        depth = 200000
        client.send_text("[" * depth + "]" * depth)
        client.send_text('{"event":"echo","data":%s,"cid":77}' % ("[" * depth + "]" * depth,))
        self.assertStillWorking(client)

    def test_garbage_before_handshake(self):
        """Binary garbage before the handshake: close 4009."""
        client = self.client()
        client.sendMessage(b"\xff\x00garbage", True)
        code, reason = self.wait(client.closed)
        self.assertEqual(code, 4009)
        self.assertStillWorking()

    def test_error_reply_with_reserved_attribute_names(self):
        """
        A client's error reply with a field named C{args} fails the
        server's invoke; it does not break the connection.
        """
        client, socket = self.victim()
        d = socket.invoke("ask")
        message = self.wait(client.wait_for(lambda m: '"event":"ask"' in m))
        cid = json.loads(message)["cid"]
        client.send_json({"rid": cid, "error": {"message": "m", "args": 5}})
        d.addTimeout(3, self.clock)
        failure = self.wait_failure(d, Exception)
        self.assertNotIsInstance(failure, defer.TimeoutError)
        self.assertStillWorking(client)

    def test_invalid_utf8_client_sees_1007(self):
        """Invalid UTF-8 in a text frame: the client gets a close frame with 1007."""
        client, socket = self.victim()
        client.sendMessage(b'{"event":"echo","data":"\xff\xfe","cid":2}', False)
        code, reason = self.wait(client.closed)
        self.assertEqual(code, 1007)
        self.assertStillWorking()

    def test_invalid_utf8_server_socket_sees_1007(self):
        """Invalid UTF-8 in a text frame: the server socket closes with 1007."""
        client, socket = self.victim()
        errors_seen = []
        socket.on("error", errors_seen.append)
        client.sendMessage(b'{"event":"echo","data":"\xff\xfe","cid":2}', False)
        self.wait(client.closed)
        self.run_until(lambda: socket.id in self.closes)
        self.assertEqual(socket.state, SCServerSocket.CLOSED)
        self.assertEqual(self.closes[socket.id], 1007)
        self.assertEqual([getattr(e, "code", None) for e in errors_seen], [1007])
        self.assertStillWorking()

    def test_max_payload_client_sees_1009(self):
        """A message over C{max_payload}: the client gets a close frame with 1009."""
        client, socket = self.victim()
        client.send_text('{"event":"echo","data":"%s","cid":2}' % ("x" * 1048576,))
        code, reason = self.wait(client.closed)
        self.assertEqual(code, 1009)
        self.assertStillWorking()

    def test_max_payload_server_socket_sees_1009(self):
        """
        A message over C{max_payload}: the server socket closes with 1009
        and reports a C{SocketProtocolError} (1009, "Message was too big to
        process").
        """
        client, socket = self.victim()
        errors_seen = []
        socket.on("error", errors_seen.append)
        client.send_text('{"event":"echo","data":"%s","cid":2}' % ("x" * 1048576,))
        self.wait(client.closed)
        self.run_until(lambda: socket.id in self.closes)
        self.assertEqual(socket.state, SCServerSocket.CLOSED)
        self.assertEqual(self.closes[socket.id], 1009)
        self.assertEqual([str(e) for e in errors_seen], ["Message was too big to process"])
        self.assertStillWorking()

    def test_max_payload_exact(self):
        """A message of exactly C{max_payload} bytes is accepted."""
        client, socket = self.victim()
        head, tail = '{"event":"echo","data":"', '","cid":99}'
        payload = head + "x" * (1048576 - len(head) - len(tail)) + tail
        self.assertEqual(len(payload), 1048576)
        client.send_text(payload)
        reply = self.wait(client.reply(99))
        self.assertEqual(len(reply["data"]), 1048576 - len(head) - len(tail))
        self.assertStillWorking(client)
