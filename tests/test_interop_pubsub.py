"""
Interop tests of pub/sub with the official SocketCluster clients
(socketcluster-client 14.3.2 and 20.0.2, default options) against a real
L{scserver.SCServer} on 127.0.0.1 running L{tests.interop_app}.

Needs Node.js and C{npm ci --prefix tests/interop}; without them these tests
fail with a message saying so.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests._node import InteropMixin


class _PubSubTests(InteropMixin):
    @defer.inlineCallbacks
    def test_publish_own_message(self):
        """
        A subscribed client that publishes with an ack receives its own
        message, the delivery arriving before the ack; a publish without ack
        is delivered too.
        """
        yield self.start_server()
        r = yield self.scenario("publishOwn")
        self.assertEqual(r["subscribe"], {"channel": "news", "subscribed": True})
        self.assertNotIn("error", r["publishAck"])
        # On the wire: the delivery to the publisher, then the ack {rid}
        # (without data or error), then the publish without ack.
        self.assertEqual(
            r["wireOrder"],
            [
                ["publish", {"hello": "world"}],
                ["ack", {"rid": r["publishCid"]}],
                ["publish", "no-callback"],
            ],
        )
        self.assertEqual(r["messages"], [{"hello": "world"}, "no-callback"])

    @defer.inlineCallbacks
    def test_server_publish(self):
        """
        C{server.exchange.publish} reaches a subscribed client, once.
        """
        yield self.start_server()
        r = yield self.scenario("serverPublish", {"channel": "news", "data": {"from": "server"}})
        self.assertEqual(r["subscribe"]["subscribed"], True)
        self.assertEqual(r["pleasePublish"], {"data": "published"})
        self.assertEqual(r["messages"], [{"from": "server"}])

    @defer.inlineCallbacks
    def test_publish_reaches_other_client(self):
        """
        A publish from one client reaches another client of the same version
        that subscribed; the publisher, not subscribed, gets nothing.
        """
        yield self.start_server()
        r = yield self.scenario("crossPublish", {"publisherVersion": self.version})
        self._check_cross(r, self.version)

    @defer.inlineCallbacks
    def test_publish_reaches_other_version_client(self):
        """
        A publish from a client of the other version reaches this one.
        """
        other = 20 if self.version == 14 else 14
        yield self.start_server()
        r = yield self.scenario("crossPublish", {"publisherVersion": other})
        self._check_cross(r, other)

    def _check_cross(self, r, publisher_version):
        self.assertEqual(r["publisherVersion"], publisher_version)
        self.assertTrue(r["distinctIds"])
        self.assertEqual(r["subscribe"]["subscribed"], True)
        self.assertNotIn("error", r["publishAck"])
        self.assertEqual(
            r["subscriberMessages"], [{"from": "publisher", "v": publisher_version}, "second"]
        )
        self.assertEqual(r["publisherFrames"], [])

    @defer.inlineCallbacks
    def test_unsubscribe_stops_delivery(self):
        """
        After the client unsubscribes, the server no longer has the
        subscription and sends nothing more on that channel (checked on the
        wire, since the clients also drop such messages themselves).
        """
        yield self.start_server()
        r = yield self.scenario("unsubscribe")
        self.assertEqual(r["subscribe"]["subscribed"], True)
        self.assertEqual(r["serverSubscriptionsBefore"], ["news"])
        self.assertEqual(r["serverSubscriptionsAfter"], [])
        self.assertEqual(r["publishBefore"], {"data": "published"})
        self.assertEqual(r["publishAfter"], {"data": "published"})
        self.assertEqual(r["messages"], ["before"])
        self.assertEqual(r["publishFrames"], ["before"])
        self.assertIs(r["clientIsSubscribed"], False)

    @defer.inlineCallbacks
    def test_kick_out(self):
        """
        C{socket.kick_out('news', 'You are kicked')} raises the client's
        kickOut event with that message and channel; the socket leaves only
        that channel and stays connected.
        """
        yield self.start_server()
        r = yield self.scenario("kickOut", {"channel": "news", "message": "You are kicked"})
        self.assertEqual([s["subscribed"] for s in r["subscribe"]], [True, True])
        self.assertEqual(r["pleaseKickOut"], {"data": "kicked"})
        self.assertEqual(r["kickOut"], {"message": "You are kicked", "channel": "news"})
        self.assertIs(r["clientIsSubscribed"], False)
        self.assertEqual(r["serverSubscriptions"], ["sports"])
        self.assertEqual(r["kickedChannelFramesAfter"], [])
        self.assertEqual(r["otherChannelMessages"], ["still-here"])
        self.assertEqual(r["state"], "open")

    @defer.inlineCallbacks
    def test_channel_limit(self):
        """
        Past socket_channel_limit a subscribe fails: the client gets
        subscribeFail with SocketCluster's BrokerError.
        """
        yield self.start_server(socket_channel_limit=2)
        r = yield self.scenario("channelLimit", {"count": 3})
        results = r["results"]
        self.assertEqual([x["subscribed"] for x in results], [True, True, False])
        error = results[2]["error"]
        self.assertEqual(error["name"], "BrokerError")
        self.assertIn("channel subscription limit of 2", error["message"])
        self.assertEqual(
            r["subscribeFail"], [{"event": "subscribeFail", "channel": "limit2", "error": error}]
        )
        self.assertEqual(r["serverSubscriptions"], ["limit0", "limit1"])
        self.assertEqual(r["state"], "open")

    @defer.inlineCallbacks
    def test_client_publish_disabled(self):
        """
        With allow_client_publish=False a client publish is answered with
        InvalidActionError and delivered to nobody.
        """
        yield self.start_server(allow_client_publish=False)
        r = yield self.scenario("publishDisabled")
        self.assertEqual(r["subscribe"]["subscribed"], True)
        self.assertEqual(
            r["publishAck"]["error"],
            {"name": "InvalidActionError", "message": "Client publish feature is disabled"},
        )
        self.assertEqual(r["messages"], [])
        self.assertEqual(r["publishFrames"], [])
        self.assertEqual(r["state"], "open")


class PubSubV14Tests(_PubSubTests, unittest.TestCase):
    """
    socketcluster-client 14.3.2.
    """

    version = 14


class PubSubV20Tests(_PubSubTests, unittest.TestCase):
    """
    socketcluster-client 20.0.2 with default options (protocolVersion 2).
    """

    version = 20
