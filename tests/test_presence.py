"""
Presence on the in-process broker, driven by a C{Clock}: the members of a
channel (C{exchange.presence}, C{presence_stats}), the C{'join'} and
C{'leave'} events of server-side channels, the C{presence_info} hook, the
C{#presence} procedure and its middleware, the bounds, and the frames of
clients that do not ask for presence (unchanged).
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer, implementer_only

from scserver.brokers.memory import MemoryBroker
from scserver.errors import InvalidActionError, InvalidOptionsError
from scserver.interfaces import IBroker, IPresenceBroker, IPresenceStore
from scserver.middleware import MIDDLEWARE_PRESENCE
from scserver._presence import (
    MAX_INFO_BYTES,
    PRESENCE_CHANNEL_PREFIX,
    token_presence_info,
)
from scserver.testing import connect, make_server


def result_of(d):
    """The result of a Deferred that has fired (a Failure's exception is raised)."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    outcome = results[0]
    if hasattr(outcome, "raiseException"):
        outcome.raiseException()
    return outcome


class PresenceTests(unittest.TestCase):
    """Presence with the memory broker."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1700000000)

    def server(self, **options):
        options.setdefault("presence_channels", "room.*")
        return make_server(self.clock, **options)

    def member(self, server, channel, token=None):
        conn = connect(server)
        conn.handshake()
        if token is not None:
            result_of(server.clients[conn.socket.id].set_auth_token(token))
        self.assertIsNone(result_of(conn.subscribe(channel)))
        return conn

    def test_members_and_stats(self):
        """
        C{presence} lists the subscribed sockets of a tracked channel by id
        with their join time; C{presence_stats} counts the connections and
        the distinct users (the C{sub} claim).
        """
        server = self.server()
        a = self.member(server, "room.1", {"sub": "alice"})
        self.clock.advance(2.5)
        b = self.member(server, "room.1", {"sub": "alice"})
        c = self.member(server, "room.1")
        self.member(server, "room.2")
        members = result_of(server.exchange.presence("room.1"))
        self.assertEqual(list(members), [a.socket.id] + sorted([b.socket.id, c.socket.id]))
        self.assertEqual(members[a.socket.id], {"joined": 1700000000.0})
        self.assertEqual(members[b.socket.id], {"joined": 1700000002.5})
        self.assertEqual(result_of(server.exchange.presence_stats("room.1")),
                         {"connections": 3, "users": 1})
        self.assertEqual(len(result_of(server.exchange.presence("room.1", limit=1))), 1)
        b.unsubscribe("room.1")
        c.disconnect()
        self.assertEqual(list(result_of(server.exchange.presence("room.1"))), [a.socket.id])
        server.clients[a.socket.id].kick_out("room.1")
        self.assertEqual(result_of(server.exchange.presence("room.1")), {})

    def test_user_claim(self):
        """C{presence_user_claim} names the claim counted as the user."""
        server = self.server(presence_user_claim="team")
        self.member(server, "room.1", {"sub": "alice", "team": "red"})
        self.member(server, "room.1", {"sub": "bob", "team": "red"})
        self.member(server, "room.1", {"sub": "carol", "team": "blue"})
        self.assertEqual(result_of(server.exchange.presence_stats("room.1")),
                         {"connections": 3, "users": 2})

    def test_max_members(self):
        """No call returns more than C{presence_max_members} members."""
        server = self.server(presence_max_members=2)
        for _ in range(4):
            self.member(server, "room.1")
        self.assertEqual(len(result_of(server.exchange.presence("room.1"))), 2)
        self.assertEqual(len(result_of(server.exchange.presence("room.1", limit=10))), 2)
        self.assertEqual(result_of(server.exchange.presence_stats("room.1"))["connections"], 4)

    def test_untracked_channel(self):
        """
        A channel that does not match C{presence_channels} keeps no
        presence: C{presence} fails with C{InvalidActionError}; so does
        every channel by default.
        """
        server = self.server()
        self.member(server, "lobby")
        self.assertRaises(InvalidActionError, result_of, server.exchange.presence("lobby"))
        plain = make_server(self.clock)
        self.member(plain, "room.1")
        self.assertRaises(InvalidActionError, result_of, plain.exchange.presence("room.1"))
        self.assertRaises(InvalidActionError, result_of,
                          plain.exchange.presence_stats("room.1"))

    def test_join_leave_events(self):
        """
        C{'join'} and C{'leave'} fire on the server-side channel with the
        socket id and what the member exposes; after C{off}, the internal
        notice channel is no longer subscribed.
        """
        server = self.server()
        events = []
        channel = server.exchange.channel("room.1")
        channel.on("join", lambda member_id, member: events.append(("join", member_id, member)))
        channel.once("leave", lambda member_id, member: events.append(("leave", member_id)))
        notices = server.exchange.channel(PRESENCE_CHANNEL_PREFIX + "room.1")
        self.assertTrue(notices.is_subscribed())
        conn = self.member(server, "room.1")
        conn.disconnect()
        self.assertEqual(events, [("join", conn.socket.id, {"joined": 1700000000.0}),
                                  ("leave", conn.socket.id)])
        channel.off("join")
        self.assertFalse(server.exchange.is_subscribed(PRESENCE_CHANNEL_PREFIX + "room.1",
                                                      include_pending=True))
        self.member(server, "room.1")
        self.assertEqual(len(events), 2)

    def test_channel_made_again(self):
        """
        A server-side channel destroyed and made again gets the events
        once its new object has a handler; the old one gets none.
        """
        server = self.server()
        old, new = [], []
        server.exchange.channel("room.1").on("join", lambda i, m: old.append(i))
        server.exchange.destroy_channel("room.1")
        server.exchange.channel("room.1").on("join", lambda i, m: new.append(i))
        conn = self.member(server, "room.1")
        self.assertEqual((old, new), ([], [conn.socket.id]))

    def test_presence_info(self):
        """
        By default a member exposes only C{joined}; C{presence_info} adds
        what it returns (C{token_presence_info}: the auth token).
        """
        server = self.server(presence_info=token_presence_info)
        conn = self.member(server, "room.1", {"sub": "alice"})
        member = result_of(server.exchange.presence("room.1"))[conn.socket.id]
        self.assertEqual(member["auth_token"]["sub"], "alice")
        self.assertEqual(member["joined"], 1700000000.0)
        spec = self.server(presence_info="scserver._presence:token_presence_info")
        self.assertIs(spec.options["presence_info"], token_presence_info)

    def test_presence_info_bounded(self):
        """
        A C{presence_info} that returns no dict, too much, or raises: the
        member exposes only C{joined} (the exception is logged).
        """
        for hook in (lambda socket: ["a list"],
                     lambda socket: {"big": "x" * MAX_INFO_BYTES},
                     lambda socket: 1 / 0):
            server = self.server(presence_info=hook)
            conn = self.member(server, "room.1")
            self.assertEqual(result_of(server.exchange.presence("room.1"))[conn.socket.id],
                             {"joined": 1700000000.0})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_notice_rate(self):
        """
        Beyond C{presence_notices_per_second}, join/leave notices are
        dropped (counted); the members are still kept.
        """
        server = self.server(presence_notices_per_second=2)
        joins = []
        server.exchange.channel("room.1").on("join", lambda i, m: joins.append(i))
        for _ in range(5):
            self.member(server, "room.1")
        self.assertEqual(len(joins), 2)
        self.assertEqual(server.exchange.presence_tracker.dropped_notices, 3)
        self.assertEqual(result_of(server.exchange.presence_stats("room.1"))["connections"], 5)
        self.clock.advance(1)
        self.member(server, "room.1")
        self.assertEqual(len(joins), 3)

    def test_reserved_channels(self):
        """Clients can neither subscribe nor publish to a notice channel."""
        server = self.server()
        conn = connect(server)
        conn.handshake()
        name = PRESENCE_CHANNEL_PREFIX + "room.1"
        d = conn.subscribe(name)
        self.assertRaises(InvalidActionError, result_of, d)
        self.assertRaises(InvalidActionError, result_of, conn.invoke(
            "#publish", {"channel": name, "data": "fake join"}))

    def test_unchanged_frames(self):
        """
        A client subscribed to a channel that keeps presence, with join
        and leave handlers on the server, gets the same frames as on a
        server without presence: no notice.
        """
        frames = []
        for options in ({"presence_channels": "*"}, {"presence_channels": None}):
            server = make_server(self.clock, **options)
            channel = server.exchange.channel("room.1")
            channel.on("join", lambda i, m: None)
            channel.on("leave", lambda i, m: None)
            conn = self.member(server, "room.1")
            other = self.member(server, "room.1")
            other.disconnect()
            result_of(server.exchange.publish("room.1", {"n": 1}))
            sent = [dict(p, data=dict(p["data"], id=None)) if p.get("rid") == 1 else p
                    for p in conn.sent]
            frames.append(sent)
        self.assertEqual(frames[0], frames[1])
        self.assertEqual(frames[0][-1], {"event": "#publish",
                                         "data": {"channel": "room.1", "data": {"n": 1}}})

    def test_broker_without_presence(self):
        """
        A broker that does not provide C{IPresenceBroker}: subscriptions
        work, and C{presence} fails with an C{InvalidActionError} naming
        the interface.
        """

        @implementer_only(IBroker)
        class PlainBroker(MemoryBroker):
            pass

        broker = PlainBroker()
        self.assertFalse(IPresenceBroker.providedBy(broker))
        server = self.server(broker=broker)
        self.member(server, "room.1")
        error = self.assertRaises(InvalidActionError, result_of,
                                  server.exchange.presence("room.1"))
        self.assertIn("IPresenceBroker", str(error))

    def test_options(self):
        """Bad presence options are refused."""
        for options in ({"presence_expiry": 0}, {"presence_max_members": 0},
                        {"presence_notices_per_second": -1}, {"presence_info": 42},
                        {"presence_info": "scserver._presence:nothing_here"}):
            self.assertRaises(InvalidOptionsError, make_server, self.clock, **options)
        server = self.server(presence_channels="room.*, lobby")
        self.assertEqual(server.options["presence_channels"], ["room.*", "lobby"])
        tracker = server.exchange.presence_tracker
        self.assertTrue(tracker.tracks("lobby"))
        self.assertTrue(tracker.tracks("room.x"))
        self.assertFalse(tracker.tracks("lobby2"))
        self.assertFalse(tracker.tracks(PRESENCE_CHANNEL_PREFIX + "lobby"))


@implementer(IPresenceStore)
class SlowStore:
    """A presence store whose reads the test answers."""

    def __init__(self):
        self.reads = []

    def start(self, local, gone):
        pass

    def add(self, channel, member, record):
        return succeed(None)

    def remove(self, channel, member):
        return succeed(None)

    def members(self, channel):
        d = Deferred()
        self.reads.append(d)
        return d

    def stop(self):
        return succeed(None)


@implementer(IPresenceBroker)
class SlowBroker(MemoryBroker):
    def __init__(self):
        MemoryBroker.__init__(self)
        self.store = SlowStore()

    def presence_store(self, clock, expiry):
        return self.store


class PresenceProcedureTests(unittest.TestCase):
    """The C{#presence} procedure."""

    def setUp(self):
        self.clock = Clock()
        self.server = make_server(self.clock, presence_channels="room.*",
                                  allow_client_presence=True)

    def client(self, channel="room.1"):
        conn = connect(self.server)
        conn.handshake()
        result_of(conn.subscribe(channel))
        return conn

    def test_answer(self):
        """A subscribed client gets the members and the counts."""
        a = self.client()
        b = self.client()
        reply = result_of(a.invoke("#presence", {"channel": "room.1"}))
        self.assertEqual(reply["channel"], "room.1")
        self.assertEqual(set(reply["members"]), {a.socket.id, b.socket.id})
        self.assertEqual((reply["connections"], reply["users"]), (2, 0))
        self.assertEqual(result_of(b.invoke("#presence", "room.1")), reply)

    def test_refused(self):
        """
        Not subscribed, a channel without presence, a malformed name:
        C{InvalidActionError}; no member is listed.
        """
        self.client("room.1")
        conn = self.client("lobby")
        for data in ({"channel": "room.1"}, {"channel": "lobby"}, {"channel": 42}, None,
                     {"channel": "x" * 1000}):
            self.assertRaises(InvalidActionError, result_of, conn.invoke("#presence", data))

    def test_disabled(self):
        """Without C{allow_client_presence} the procedure is refused."""
        server = make_server(self.clock, presence_channels="room.*")
        conn = connect(server)
        conn.handshake()
        result_of(conn.subscribe("room.1"))
        error = self.assertRaises(InvalidActionError, result_of,
                                  conn.invoke("#presence", {"channel": "room.1"}))
        self.assertIn("disabled", str(error))

    def test_middleware(self):
        """
        The C{presence} middleware sees the socket and the channel, and
        may block; a silent block is a C{SilentMiddlewareBlockedError}.
        """
        seen = []

        def middleware(req, next):
            seen.append((req.socket.id, req.channel))
            if req.channel == "room.1":
                next(InvalidActionError("private"))
            else:
                next(True)

        self.server.add_middleware(MIDDLEWARE_PRESENCE, middleware)
        conn = self.client("room.1")
        result_of(conn.subscribe("room.2"))
        error = self.assertRaises(InvalidActionError, result_of,
                                  conn.invoke("#presence", {"channel": "room.1"}))
        self.assertEqual(str(error), "private")
        d = conn.invoke("#presence", {"channel": "room.2"})
        failure = []
        d.addErrback(failure.append)
        self.assertEqual(failure[0].value.name, "SilentMiddlewareBlockedError")
        self.assertEqual(seen, [(conn.socket.id, "room.1"), (conn.socket.id, "room.2")])

    def test_reads_coalesced(self):
        """
        Concurrent requests for one channel share one store read; a store
        failure reaches the client as a bare C{BrokerError}.
        """
        broker = SlowBroker()
        server = make_server(self.clock, presence_channels="room.*",
                             allow_client_presence=True, broker=broker)
        conn = connect(server)
        conn.handshake()
        result_of(conn.subscribe("room.1"))
        first = conn.invoke("#presence", {"channel": "room.1"})
        second = conn.invoke("#presence", {"channel": "room.1"})
        third = server.exchange.presence("room.1")
        self.assertEqual(len(broker.store.reads), 1)
        broker.store.reads[0].callback({conn.socket.id: {"joined": 1.0, "user": None,
                                                         "info": {}}})
        self.assertEqual(result_of(first)["members"], {conn.socket.id: {"joined": 1.0}})
        self.assertEqual(result_of(second)["connections"], 1)
        self.assertEqual(result_of(third), {conn.socket.id: {"joined": 1.0}})
        failing = conn.invoke("#presence", {"channel": "room.1"})
        broker.store.reads[1].errback(RuntimeError("redis://secret-host:6379 is down"))
        failures = []
        failing.addErrback(failures.append)
        self.assertEqual(failures[0].value.name, "BrokerError")
        self.assertEqual(str(failures[0].value), "Presence is unavailable")
