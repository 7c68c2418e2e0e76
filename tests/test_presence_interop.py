"""
The C{#presence} procedure invoked by the unchanged official SocketCluster
clients (socketcluster-client 14.3.2 and 20.0.2) against a real
L{scserver.SCServer} on 127.0.0.1 running L{tests.interop_app}, with the
scenarios of C{tests/interop/scenarios/presence.js}.

Needs Node.js and C{npm ci --prefix tests/interop}.
"""

from twisted.internet import defer
from twisted.trial import unittest

from scserver._presence import token_presence_info
from tests._node import InteropMixin

OPTIONS = dict(presence_channels="room.*", allow_client_presence=True,
               presence_info=token_presence_info)


class _PresenceInteropTests(InteropMixin):
    @defer.inlineCallbacks
    def test_presence_invoke(self):
        """
        Two clients (this version and the other) subscribe to C{room.1};
        C{#presence} answers each with both members (the logged-in one with
        its token, as the app's C{presence_info} exposes it) and the counts;
        a channel the client is not subscribed to is refused, and so is a
        subscription to the internal notice channel; after one client
        unsubscribes, it is gone.  No notice frame reaches a client.
        """
        yield self.start_server(**OPTIONS)
        r = yield self.scenario("presenceInvoke", {"channel": "room.1", "user": "alice"})
        self.assertEqual(r["login"], {"data": "ok"})
        self.assertTrue(r["subA"]["subscribed"])
        self.assertTrue(r["subB"]["subscribed"])
        ids = r["ids"]
        both = r["both"]["data"]
        self.assertEqual(both["channel"], "room.1")
        self.assertEqual(set(both["members"]), {ids["a"], ids["b"]})
        self.assertEqual(both["connections"], 2)
        self.assertEqual(both["users"], 1)
        self.assertEqual(both["members"][ids["a"]]["auth_token"]["sub"], "alice")
        self.assertIsNone(both["members"][ids["b"]]["auth_token"])
        for member in both["members"].values():
            self.assertIsInstance(member["joined"], (int, float))
        self.assertEqual(r["fromB"]["data"]["members"], both["members"])
        self.assertEqual(r["notSubscribed"]["error"]["name"], "InvalidActionError")
        self.assertNotIn("data", r["notSubscribed"])
        self.assertFalse(r["reserved"].get("subscribed"))
        after = r["afterLeave"]["data"]
        self.assertEqual(set(after["members"]), {ids["a"]})
        self.assertEqual((after["connections"], after["users"]), (1, 1))
        self.assertEqual([f for f in r["frames"] if "presence" in f], [])

    @defer.inlineCallbacks
    def test_presence_refused_by_middleware(self):
        """
        A C{presence} middleware that blocks: the client gets its error,
        and no member list.
        """
        server = yield self.start_server(**OPTIONS)

        def refuse(req, next):
            next(Exception("Presence of {} is private".format(req.channel)))

        server.add_middleware(server.MIDDLEWARE_PRESENCE, refuse)
        r = yield self.scenario("presenceRefused", {"channel": "room.1"})
        self.assertTrue(r["sub"]["subscribed"])
        self.assertEqual(r["reply"]["error"]["message"], "Presence of room.1 is private")
        self.assertNotIn("data", r["reply"])

    @defer.inlineCallbacks
    def test_presence_disabled(self):
        """
        Without C{allow_client_presence}, C{#presence} is refused with an
        C{InvalidActionError}.
        """
        yield self.start_server(presence_channels="room.*")
        r = yield self.scenario("presenceRefused", {"channel": "room.1"})
        self.assertEqual(r["reply"]["error"]["name"], "InvalidActionError")
        self.assertIn("disabled", r["reply"]["error"]["message"])


class PresenceInteropV14Tests(_PresenceInteropTests, unittest.TestCase):
    """socketcluster-client 14.3.2 (protocol 1)."""

    version = 14


class PresenceInteropV20Tests(_PresenceInteropTests, unittest.TestCase):
    """socketcluster-client 20.0.2 (protocol 2)."""

    version = 20
